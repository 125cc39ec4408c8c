// Package fstree lists a directory tree entry by entry and compares two
// listings: the tests' way to say two layer appliers (or an unpacked
// snapshot and the tree an image was built from) made the same tree.
//
// # What Compare compares
//
// Every entry of both listings, the root included: type, permission and
// special bits (setuid, setgid, sticky), owner, size of regular files, a
// sha256 of their contents, a symlink's target, device numbers and xattrs
// (all but trusted.overlay.*, overlayfs's own bookkeeping, and
// security.selinux, the host's label). Scan also records mtimes and
// inodes, which a listing read back from JSON does not carry, so these are
// compared only when both listings have them: the mtime of everything but
// dirs, and hardlink groups (the set of names sharing an inode). A dir's
// mtime is the time of the apply whenever a later layer changes the dir
// without an entry for it, so it is compared only when Options.Since is
// given: an mtime at or after Since counts as "set by the apply". Access
// times are never compared: reading a file to hash it may change them.
package fstree

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is one file of a tree. Its JSON form is the listing test/realimage
// stores with a built image; MTime and Ino stay out of it.
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
	Xattrs map[string]string `json:"xattrs,omitempty"` // hex values; IgnoredXattr ones left out

	MTime time.Time `json:"-"` // zero: not known
	Ino   uint64    `json:"-"` // zero: not known
}

// Scan lists the tree at root in lexical order. It does not cross into
// other filesystems mounted below root (a bind-mounted /proc, say).
func Scan(root string) ([]Entry, error) {
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
			return fmt.Errorf("lstat %s: %w", path, err)
		}
		if rel == "." {
			rootDev = st.Dev
		} else if d.IsDir() && st.Dev != rootDev {
			return fmt.Errorf("%s is another filesystem: unmount it before scanning %s", path, root)
		}
		e, err := entryOf(path, rel, &st)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", root, err)
	}
	return out, nil
}

func entryOf(path, rel string, st *unix.Stat_t) (Entry, error) {
	e := Entry{
		Path: rel, Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid),
		MTime: time.Unix(st.Mtim.Unix()).UTC(), Ino: st.Ino,
	}
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type, e.Size = "file", st.Size
		if e.SHA256, err = hashFile(path); err != nil {
			return e, err
		}
	case unix.S_IFDIR:
		e.Type = "dir"
	case unix.S_IFLNK:
		e.Type = "symlink"
		if e.Link, err = os.Readlink(path); err != nil {
			return e, err
		}
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
	e.Xattrs, err = readXattrs(path)
	return e, err
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// IgnoredXattr names the xattrs a listing leaves out: overlayfs's own
// (how an upper dir records whiteouts and copy-ups, not file content) and
// the host's SELinux label.
func IgnoredXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || name == "security.selinux"
}

// readXattrs lists path's xattrs as Entry keeps them: hex values,
// IgnoredXattr ones left out.
func readXattrs(path string) (map[string]string, error) {
	all, err := Xattrs(path)
	if err != nil {
		return nil, err
	}
	var out map[string]string
	for name, v := range all {
		if IgnoredXattr(name) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = hex.EncodeToString(v)
	}
	return out, nil
}

// Xattrs reads all of path's xattrs, not following a symlink; none where
// the filesystem has no xattrs.
func Xattrs(path string) (map[string][]byte, error) {
	size, err := unix.Llistxattr(path, nil)
	if errors.Is(err, unix.ENOTSUP) || err == nil && size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(path, buf); err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	out := map[string][]byte{}
	for name := range bytes.SplitSeq(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		v, err := Xattr(path, string(name))
		if err != nil {
			return nil, err
		}
		out[string(name)] = v
	}
	return out, nil
}

// Xattr reads one xattr of path, not following a symlink.
func Xattr(path, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, fmt.Errorf("xattr %s of %s: %w", name, path, err)
	}
	v := make([]byte, n)
	if n, err = unix.Lgetxattr(path, name, v); err != nil {
		return nil, fmt.Errorf("xattr %s of %s: %w", name, path, err)
	}
	return v[:n], nil
}
