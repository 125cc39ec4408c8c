package fstree

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Difference is one way two listings differ.
type Difference struct {
	Path  string // below the roots, "." for the roots themselves
	Field string // "entry" (in one listing only), "type", "mode", "owner", "size", "content", "link", "rdev", "mtime", "xattr <name>", "hardlinks"
	A, B  string // the values in listing a and listing b ("absent" for none)
}

func (d Difference) String() string {
	return fmt.Sprintf("%s: %s: a=%s b=%s", d.Path, d.Field, d.A, d.B)
}

// Options tunes Compare.
type Options struct {
	// Since, when set, makes Compare compare dirs' mtimes too, taking any
	// two at or after Since (set by the applies, not from a header) as
	// equal.
	Since time.Time
}

// CompareDirs scans the trees a and b and compares them. An error is a
// failure to read either tree.
func CompareDirs(a, b string, opts Options) ([]Difference, error) {
	la, err := Scan(a)
	if err != nil {
		return nil, err
	}
	lb, err := Scan(b)
	if err != nil {
		return nil, err
	}
	return Compare(la, lb, opts), nil
}

// Compare compares the listings a and b entry by entry (see the package
// doc) and returns their differences, sorted by path.
func Compare(a, b []Entry, opts Options) []Difference {
	ta, tb := index(a), index(b)
	names := slices.Collect(maps.Keys(ta.entries))
	for n := range tb.entries {
		if _, ok := ta.entries[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []Difference
	add := func(p, field string, va, vb any) {
		out = append(out, Difference{p, field, fmt.Sprint(va), fmt.Sprint(vb)})
	}
	for _, n := range names {
		ea, okA := ta.entries[n]
		eb, okB := tb.entries[n]
		switch {
		case !okA:
			add(n, "entry", "absent", eb.Type)
			continue
		case !okB:
			add(n, "entry", ea.Type, "absent")
			continue
		}
		if ea.Type != eb.Type {
			add(n, "type", ea.Type, eb.Type)
			continue
		}
		if ea.Mode != eb.Mode {
			add(n, "mode", fmt.Sprintf("%04o", ea.Mode), fmt.Sprintf("%04o", eb.Mode))
		}
		if ea.UID != eb.UID || ea.GID != eb.GID {
			add(n, "owner", fmt.Sprintf("%d:%d", ea.UID, ea.GID), fmt.Sprintf("%d:%d", eb.UID, eb.GID))
		}
		if ea.Size != eb.Size {
			add(n, "size", ea.Size, eb.Size)
		}
		if ea.SHA256 != eb.SHA256 {
			add(n, "content", shortHash(ea.SHA256), shortHash(eb.SHA256))
		}
		if ea.Link != eb.Link {
			add(n, "link", ea.Link, eb.Link)
		}
		if ea.Rdev != eb.Rdev {
			add(n, "rdev", devString(ea.Rdev), devString(eb.Rdev))
		}
		if !sameTime(ea, eb, opts.Since) {
			add(n, "mtime", ea.MTime.Format(time.RFC3339Nano), eb.MTime.Format(time.RFC3339Nano))
		}
		for _, x := range xattrNames(ea.Xattrs, eb.Xattrs) {
			va, okA := ea.Xattrs[x]
			vb, okB := eb.Xattrs[x]
			if okA != okB || va != vb {
				add(n, "xattr "+x, xattrString(va, okA), xattrString(vb, okB))
			}
		}
		if ea.Ino == 0 || eb.Ino == 0 {
			continue // a listing without inodes: no hardlink groups
		}
		if ga, gb := ta.group(ea), tb.group(eb); !slices.Equal(ga, gb) && n == firstInBoth(ta, tb, ga, gb) {
			add(n, "hardlinks", strings.Join(ga, ","), strings.Join(gb, ","))
		}
	}
	return out
}

// tree is one listing: its entries by path, and the paths sharing each
// inode.
type tree struct {
	entries map[string]*Entry
	inodes  map[uint64][]string
}

func index(l []Entry) *tree {
	t := &tree{entries: map[string]*Entry{}, inodes: map[uint64][]string{}}
	for i := range l {
		e := &l[i]
		t.entries[e.Path] = e
		if e.Type != "dir" && e.Ino != 0 {
			t.inodes[e.Ino] = append(t.inodes[e.Ino], e.Path)
		}
	}
	for _, names := range t.inodes {
		slices.Sort(names)
	}
	return t
}

// group is the sorted names of e's inode (one name: no hardlinks).
func (t *tree) group(e *Entry) []string { return t.inodes[e.Ino] }

// firstInBoth is the least of the names (two hardlink groups) that both
// listings have: the one a differing group is reported at, once.
func firstInBoth(ta, tb *tree, ga, gb []string) string {
	first := ""
	for _, n := range slices.Concat(ga, gb) {
		_, okA := ta.entries[n]
		_, okB := tb.entries[n]
		if okA && okB && (first == "" || n < first) {
			first = n
		}
	}
	return first
}

func shortHash(h string) string {
	if len(h) > 16 {
		h = h[:16]
	}
	return "sha256:" + h
}

// xattrNames is the names of a's and b's xattrs, but IgnoredXattr ones,
// which a listing stored before they were left out may still have.
func xattrNames(a, b map[string]string) []string {
	var names []string
	for n := range a {
		if !IgnoredXattr(n) {
			names = append(names, n)
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok && !IgnoredXattr(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// xattrString shows a hex-encoded value quoted, as the bytes it stands for.
func xattrString(v string, ok bool) string {
	if !ok {
		return "absent"
	}
	if b, err := hex.DecodeString(v); err == nil {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q", v)
}

func devString(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// sameTime reports whether a's and b's mtimes agree (dirs: see Options);
// an mtime a listing does not know agrees with any.
func sameTime(a, b *Entry, since time.Time) bool {
	ta, tb := a.MTime, b.MTime
	if ta.IsZero() || tb.IsZero() {
		return true
	}
	if a.Type != "dir" {
		return ta.Equal(tb)
	}
	if since.IsZero() {
		return true
	}
	if !ta.Before(since) && !tb.Before(since) {
		return true
	}
	return ta.Equal(tb)
}
