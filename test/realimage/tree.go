package realimage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one file of a tree, as the comparison sees it: everything a
// layer applier is responsible for except times.
type Entry struct {
	Path   string            `json:"path"` // relative, "." for the root
	Type   string            `json:"type"` // file, dir, symlink, char, block, fifo, socket
	Mode   uint32            `json:"mode"` // permission bits with setuid, setgid, sticky
	UID    int               `json:"uid"`
	GID    int               `json:"gid"`
	Size   int64             `json:"size,omitempty"`   // regular files only
	SHA256 string            `json:"sha256,omitempty"` // regular files only
	Link   string            `json:"link,omitempty"`   // symlink target
	Rdev   uint64            `json:"rdev,omitempty"`   // devices only
	Xattrs map[string]string `json:"xattrs,omitempty"` // hex values; trusted.overlay.* left out
}

// Walk lists the tree at root in lexical order. It does not cross into
// other filesystems mounted below root (a bind-mounted /proc, say).
func Walk(root string) ([]Entry, error) {
	var rootDev uint64
	var out []Entry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		if rel == "." {
			rootDev = st.Dev
		} else if d.IsDir() && st.Dev != rootDev {
			return fmt.Errorf("%s is another filesystem: unmount it before walking %s", path, root)
		}
		e, err := entryOf(path, rel, &st)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func entryOf(path, rel string, st *unix.Stat_t) (Entry, error) {
	e := Entry{Path: rel, Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type, e.Size = "file", st.Size
		sum, err := hashFile(path)
		if err != nil {
			return e, err
		}
		e.SHA256 = sum
	case unix.S_IFDIR:
		e.Type = "dir"
	case unix.S_IFLNK:
		e.Type = "symlink"
		target, err := os.Readlink(path)
		if err != nil {
			return e, err
		}
		e.Link = target
	case unix.S_IFCHR:
		e.Type, e.Rdev = "char", st.Rdev
	case unix.S_IFBLK:
		e.Type, e.Rdev = "block", st.Rdev
	case unix.S_IFIFO:
		e.Type = "fifo"
	case unix.S_IFSOCK:
		e.Type = "socket"
	default:
		return e, fmt.Errorf("%s: unknown file type %#o", path, st.Mode&unix.S_IFMT)
	}
	xattrs, err := readXattrs(path)
	if err != nil {
		return e, err
	}
	for k, v := range xattrs {
		if e.Xattrs == nil {
			e.Xattrs = map[string]string{}
		}
		e.Xattrs[k] = hex.EncodeToString(v)
	}
	return e, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readXattrs reads path's extended attributes (not following a symlink),
// leaving out overlayfs's own (trusted.overlay.*), which are how an upper
// dir records whiteouts and copy-ups, not file content.
func readXattrs(path string) (map[string][]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(path, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(path, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		v, err := getXattr(path, name)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(path, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, fmt.Errorf("xattr %s of %s: %w", name, path, err)
	}
	v := make([]byte, n)
	n, err = unix.Lgetxattr(path, name, v)
	if err != nil {
		return nil, fmt.Errorf("xattr %s of %s: %w", name, path, err)
	}
	return v[:n], nil
}

// Compare lists, one line each, how got differs from want: entries missing,
// extra, or different (field by field). Nil means the same tree.
func Compare(want, got []Entry) []string {
	byPath := map[string]Entry{}
	for _, e := range got {
		byPath[e.Path] = e
	}
	var diffs []string
	for _, w := range want {
		g, ok := byPath[w.Path]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: missing (want %s)", w.Path, w.Type))
			continue
		}
		delete(byPath, w.Path)
		if d := differ(w, g); d != "" {
			diffs = append(diffs, w.Path+": "+d)
		}
	}
	var extra []string
	for p, g := range byPath {
		extra = append(extra, fmt.Sprintf("%s: extra %s", p, g.Type))
	}
	slices.Sort(extra)
	return append(diffs, extra...)
}

func differ(w, g Entry) string {
	var d []string
	field := func(name string, want, got any) {
		if fmt.Sprint(want) != fmt.Sprint(got) {
			d = append(d, fmt.Sprintf("%s %v, want %v", name, got, want))
		}
	}
	field("type", w.Type, g.Type)
	field("mode", fmt.Sprintf("%#o", w.Mode), fmt.Sprintf("%#o", g.Mode))
	field("uid", w.UID, g.UID)
	field("gid", w.GID, g.GID)
	field("size", w.Size, g.Size)
	field("sha256", w.SHA256, g.SHA256)
	field("link", w.Link, g.Link)
	field("rdev", w.Rdev, g.Rdev)
	field("xattrs", w.Xattrs, g.Xattrs) // fmt prints maps sorted
	return strings.Join(d, ", ")
}

// writeManifest stores entries as JSON at path.
func writeManifest(path string, entries []Entry) error {
	b, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadManifest reads a tree listing written by the build.
func ReadManifest(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []Entry
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}
