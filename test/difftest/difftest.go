// Package difftest checks keel's layer applier (core/diff) against
// containerd's: it applies the same layers with each into its own
// directory and compares the two trees entry by entry.
//
// containerd's applier is its pkg/archive Apply with the default whiteout
// handling (a whiteout deletes, an opaque dir is emptied of what the layer
// did not write), which is what containerd runs for every snapshotter but
// overlay; its overlay applier writes the same tree as overlayfs upper-dir
// markers instead. ApplyKeel runs keel's applier onto a plain dir (as on
// the native and btrfs snapshotters), ApplyKeelOverlay through overlay
// mounts (as on the overlay snapshotter). Only tests import this package,
// so containerd never links into keel's binaries (test/layout checks).
//
// The tests run hand-written stacks, the differences kept on purpose
// (knownDifferences, TestKnownOverlayDifferences: each says why and pins
// exactly what differs), and stacks made by Generate: 100 seeds by default,
// KEEL_DIFFTEST_SEEDS=n for more, and FuzzApplyDifferential for a fuzzer
// (go test -fuzz FuzzApplyDifferential -fuzzminimizetime 10x: an exec
// takes tens of ms, so the default minimization stalls for a minute).
//
// # What Compare compares
//
// Every entry of both trees, the root included: type, permission and
// special bits (setuid, setgid, sticky), owner, size (not of dirs, which
// the file system decides), a sha256 of a regular file's contents, a
// symlink's target, device numbers, xattrs (all but trusted.overlay.*,
// overlayfs's own bookkeeping, and security.selinux, the host's label),
// hardlink groups (the set of names sharing an inode) and the mtime of
// everything but dirs. A dir's mtime is the time of the apply in both
// appliers whenever a later layer changes the dir without an entry for it,
// so it is compared only when Options.Since is given: an mtime at or after
// Since counts as "set by the apply". Access times are never compared:
// reading a file to hash it may change them.
package difftest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/sdk/mount"
)

// ApplyReference applies the layers (gzip, zstd or plain tars, lowest
// first) onto dir with containerd's applier.
func ApplyReference(ctx context.Context, dir string, layers ...io.Reader) error {
	// containerd logs each xattr it ignores; keep test output for failures.
	quiet := logrus.New()
	quiet.Out = io.Discard
	ctx = log.WithLogger(ctx, logrus.NewEntry(quiet))
	for i, l := range layers {
		r, err := compression.DecompressStream(l)
		if err != nil {
			return fmt.Errorf("containerd: layer %d: %w", i, err)
		}
		_, err = archive.Apply(ctx, dir, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("containerd: layer %d: %w", i, err)
		}
	}
	return nil
}

// ApplyKeel applies the layers onto dir with keel's applier (core/diff).
func ApplyKeel(ctx context.Context, dir string, layers ...io.Reader) error {
	for i, l := range layers {
		if _, err := diff.Apply(ctx, dir, l); err != nil {
			return fmt.Errorf("keel: layer %d: %w", i, err)
		}
	}
	return nil
}

// ApplyKeelOverlay applies the layers with keel's applier the way it runs
// on keel's overlay snapshotter: the first onto a plain dir, each other
// through an overlay mount (index=off) of its own upper dir over the
// layers below, so that overlayfs turns deletions into its whiteouts and
// opaque dirs. The layers' dirs are made in work. It returns the dir that
// shows the stack (the first layer's dir, or a read-only overlay mount of
// them all) and a func that unmounts it; on error nothing stays mounted.
func ApplyKeelOverlay(ctx context.Context, work string, layers ...io.Reader) (view string, unmount func() error, err error) {
	nop := func() error { return nil }
	var uppers []string // top first, as lowerdir lists them
	for i, l := range layers {
		upper := filepath.Join(work, fmt.Sprintf("%d", i))
		if err := os.Mkdir(upper, 0o755); err != nil {
			return "", nil, err
		}
		target := upper
		if i > 0 {
			target = filepath.Join(work, fmt.Sprintf("%d-mnt", i))
			wd := filepath.Join(work, fmt.Sprintf("%d-work", i))
			for _, d := range []string{target, wd} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return "", nil, err
				}
			}
			if err := mount.Overlay(uppers, upper, wd, "index=off").Mount(target); err != nil {
				return "", nil, err
			}
		}
		_, err := diff.Apply(ctx, target, l)
		if i > 0 {
			if uerr := mount.Unmount(target); err == nil {
				err = uerr
			}
		}
		if err != nil {
			return "", nil, fmt.Errorf("keel on overlay: layer %d: %w", i, err)
		}
		uppers = append([]string{upper}, uppers...)
	}
	if len(uppers) < 2 {
		return uppers[0], nop, nil
	}
	view = filepath.Join(work, "view")
	if err := os.Mkdir(view, 0o755); err != nil {
		return "", nil, err
	}
	if err := mount.Overlay(uppers, "", "", "index=off").Mount(view); err != nil {
		return "", nil, err
	}
	return view, func() error { return mount.Unmount(view) }, nil
}

// Files opens layer files for ApplyReference and ApplyKeel; close closes
// them all.
func Files(paths ...string) (layers []io.Reader, close func(), err error) {
	var files []*os.File
	close = func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			close()
			return nil, nil, err
		}
		files = append(files, f)
		layers = append(layers, f)
	}
	return layers, close, nil
}

// Difference is one way the trees differ.
type Difference struct {
	Path  string // below the roots, "." for the roots themselves
	Field string // "entry" (in one tree only), "type", "mode", "owner", "size", "content", "link", "rdev", "mtime", "xattr <name>", "hardlinks"
	A, B  string // the values in tree a and tree b ("absent" for none)
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

// Compare compares the trees a and b entry by entry (see the package doc)
// and returns their differences, sorted by path. An error is a failure to
// read either tree.
func Compare(a, b string, opts Options) ([]Difference, error) {
	ta, err := scan(a)
	if err != nil {
		return nil, err
	}
	tb, err := scan(b)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ta.entries))
	for n := range ta.entries {
		names = append(names, n)
	}
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
			add(n, "entry", "absent", eb.kind())
			continue
		case !okB:
			add(n, "entry", ea.kind(), "absent")
			continue
		}
		if ea.typ() != eb.typ() {
			add(n, "type", ea.kind(), eb.kind())
			continue
		}
		if pa, pb := ea.st.Mode&^unix.S_IFMT, eb.st.Mode&^unix.S_IFMT; pa != pb {
			add(n, "mode", fmt.Sprintf("%04o", pa), fmt.Sprintf("%04o", pb))
		}
		if ea.st.Uid != eb.st.Uid || ea.st.Gid != eb.st.Gid {
			add(n, "owner", fmt.Sprintf("%d:%d", ea.st.Uid, ea.st.Gid), fmt.Sprintf("%d:%d", eb.st.Uid, eb.st.Gid))
		}
		if ea.typ() != unix.S_IFDIR && ea.st.Size != eb.st.Size {
			add(n, "size", ea.st.Size, eb.st.Size)
		}
		if ea.hash != eb.hash {
			add(n, "content", ea.hash, eb.hash)
		}
		if ea.link != eb.link {
			add(n, "link", ea.link, eb.link)
		}
		if ea.st.Rdev != eb.st.Rdev {
			add(n, "rdev", devString(ea.st.Rdev), devString(eb.st.Rdev))
		}
		if !sameTime(ea, eb, opts.Since) {
			add(n, "mtime", mtime(ea).Format(time.RFC3339Nano), mtime(eb).Format(time.RFC3339Nano))
		}
		for _, x := range xattrNames(ea.xattrs, eb.xattrs) {
			va, okA := ea.xattrs[x]
			vb, okB := eb.xattrs[x]
			if okA != okB || va != vb {
				add(n, "xattr "+x, xattrString(va, okA), xattrString(vb, okB))
			}
		}
		if ga, gb := ta.group(ea), tb.group(eb); !slices.Equal(ga, gb) && n == firstInBoth(ta, tb, ga, gb) {
			add(n, "hardlinks", strings.Join(ga, ","), strings.Join(gb, ","))
		}
	}
	return out, nil
}

// firstInBoth is the least of the names (two hardlink groups) that both
// trees have: the one a differing group is reported at, once.
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

// entry is what Compare knows of a node.
type entry struct {
	st     unix.Stat_t
	hash   string // regular files
	link   string // symlinks
	xattrs map[string]string
}

func (e *entry) typ() uint32 { return e.st.Mode & unix.S_IFMT }

func (e *entry) kind() string {
	switch e.typ() {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("mode %o", e.st.Mode)
}

// tree is one scanned tree: its entries by path, and the paths sharing
// each inode.
type tree struct {
	entries map[string]*entry
	inodes  map[uint64][]string
}

// group is the sorted names of e's inode (one name: no hardlinks).
func (t *tree) group(e *entry) []string { return t.inodes[e.st.Ino] }

func scan(root string) (*tree, error) {
	t := &tree{entries: map[string]*entry{}, inodes: map[uint64][]string{}}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e := &entry{}
		if err := unix.Lstat(p, &e.st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		switch e.typ() {
		case unix.S_IFREG:
			if e.hash, err = fileHash(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if e.xattrs, err = xattrs(p); err != nil {
			return err
		}
		t.entries[rel] = e
		if e.typ() != unix.S_IFDIR {
			t.inodes[e.st.Ino] = append(t.inodes[e.st.Ino], rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", root, err)
	}
	for _, names := range t.inodes {
		slices.Sort(names)
	}
	return t, nil
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// ignoredXattr names the xattrs Compare leaves out (see the package doc).
func ignoredXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || name == "security.selinux"
}

func xattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	out := map[string]string{}
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 || ignoredXattr(string(name)) {
			continue
		}
		n, err := unix.Lgetxattr(p, string(name), nil)
		if err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", name, p, err)
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, string(name), v); err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", name, p, err)
		}
		out[string(name)] = string(v[:n])
	}
	return out, nil
}

func xattrNames(a, b map[string]string) []string {
	var names []string
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

func xattrString(v string, ok bool) string {
	if !ok {
		return "absent"
	}
	return fmt.Sprintf("%q", v)
}

func devString(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

func mtime(e *entry) time.Time { return time.Unix(e.st.Mtim.Unix()).UTC() }

// sameTime reports whether a's and b's mtimes agree (dirs: see Options).
func sameTime(a, b *entry, since time.Time) bool {
	ta, tb := mtime(a), mtime(b)
	if a.typ() != unix.S_IFDIR {
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
