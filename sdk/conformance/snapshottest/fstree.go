package snapshottest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// fsOp changes a tree rooted at dir; a layer is a list of them. The same ops
// applied to a plain directory give the tree a snapshot must show.
type fsOp func(dir string) error

func applyOps(dir string, ops ...fsOp) error {
	for _, op := range ops {
		if err := op(dir); err != nil {
			return err
		}
	}
	return nil
}

func fsWrite(name, data string, perm uint32) fsOp {
	return func(dir string) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			return err
		}
		return unix.Chmod(p, perm) // raw mode, so setuid bits survive
	}
}

func fsMkdir(name string, perm uint32) fsOp {
	return func(dir string) error {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		return unix.Chmod(p, perm)
	}
}

func fsSymlink(target, name string) fsOp {
	return func(dir string) error { return os.Symlink(target, filepath.Join(dir, name)) }
}

func fsLink(oldname, name string) fsOp {
	return func(dir string) error { return os.Link(filepath.Join(dir, oldname), filepath.Join(dir, name)) }
}

func fsChown(name string, uid, gid int) fsOp {
	return func(dir string) error { return os.Lchown(filepath.Join(dir, name), uid, gid) }
}

func fsXattr(name, attr, value string) fsOp {
	return func(dir string) error { return unix.Lsetxattr(filepath.Join(dir, name), attr, []byte(value), 0) }
}

func fsRemove(name string) fsOp {
	return func(dir string) error { return os.RemoveAll(filepath.Join(dir, name)) }
}

func fsMkfifo(name string) fsOp {
	return func(dir string) error { return unix.Mkfifo(filepath.Join(dir, name), 0o640) }
}

func fsMknod(name string, major, minor uint32) fsOp {
	return func(dir string) error {
		return unix.Mknod(filepath.Join(dir, name), unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor)))
	}
}

// fsChtimes sets the mtime (and atime) of name, not following symlinks.
func fsChtimes(name string, t time.Time) fsOp {
	return func(dir string) error {
		ts := unix.NsecToTimespec(t.UnixNano())
		return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, name), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// fsEntry is what compareTrees checks of one path.
type fsEntry struct {
	mode     uint32
	uid, gid uint32
	nlink    uint64
	rdev     uint64
	mtime    time.Time
	data     []byte // regular files
	target   string // symlinks
	xattrs   map[string]string
	linkedTo string // first name (in walk order) sharing the inode
}

// oldTime separates mtimes a layer set on purpose (before it) from those of
// files just written, which compareTrees cannot predict.
var oldTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func readTree(root string) (map[string]fsEntry, error) {
	out := map[string]fsEntry{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := fsEntry{
			mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev,
			mtime: time.Unix(st.Mtim.Unix()),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFREG:
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
			e.nlink = uint64(st.Nlink)
			if first, ok := inodes[st.Ino]; ok {
				e.linkedTo = first
			} else {
				inodes[st.Ino] = rel
			}
		case unix.S_IFLNK:
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if e.xattrs, err = xattrs(p); err != nil {
			return err
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "security.") {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out[name] = string(val[:m])
	}
	return out, nil
}

// compareTrees lists how the tree at got differs from the tree at want: the
// set of paths, types, modes, owners, contents, symlink targets, device
// numbers, xattrs, hardlinks and mtimes set on purpose (the roots
// themselves are not compared).
func compareTrees(want, got string) error {
	w, err := readTree(want)
	if err != nil {
		return err
	}
	g, err := readTree(got)
	if err != nil {
		return err
	}
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	for _, p := range sortedKeys(w) {
		we := w[p]
		ge, ok := g[p]
		if !ok {
			add("%s: missing", p)
			continue
		}
		if we.mode != ge.mode {
			add("%s: mode %o, want %o", p, ge.mode, we.mode)
		}
		if we.uid != ge.uid || we.gid != ge.gid {
			add("%s: owner %d:%d, want %d:%d", p, ge.uid, ge.gid, we.uid, we.gid)
		}
		if !bytes.Equal(we.data, ge.data) {
			add("%s: content %q, want %q", p, short(ge.data), short(we.data))
		}
		if we.target != ge.target {
			add("%s: symlink to %q, want %q", p, ge.target, we.target)
		}
		if we.rdev != ge.rdev {
			add("%s: device %d, want %d", p, ge.rdev, we.rdev)
		}
		// Which visible names share an inode must match. The count may
		// be higher: a union (overlayfs) reports the lower inode's links,
		// names a higher layer's whiteouts hide included, and nothing in
		// a later mount can know better (the kernel keeps no record).
		if ge.nlink < we.nlink || we.linkedTo != ge.linkedTo {
			add("%s: %d links (same inode as %q), want %d (%q)", p, ge.nlink, ge.linkedTo, we.nlink, we.linkedTo)
		}
		if fmt.Sprint(we.xattrs) != fmt.Sprint(ge.xattrs) {
			add("%s: xattrs %v, want %v", p, ge.xattrs, we.xattrs)
		}
		if we.mode&unix.S_IFMT != unix.S_IFDIR && we.mtime.Before(oldTime) && !we.mtime.Equal(ge.mtime) {
			add("%s: mtime %s, want %s", p, ge.mtime, we.mtime)
		}
	}
	for _, p := range sortedKeys(g) {
		if _, ok := w[p]; !ok {
			add("%s: unexpected", p)
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "\n"))
	}
	return nil
}

func sortedKeys(m map[string]fsEntry) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func short(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// mountTemp mounts ms on a fresh directory and returns it with a function
// that unmounts it; the case's cleanup unmounts it too, even on failure.
func mountTemp(t conformance.T, ms []mount.Mount) (string, func()) {
	t.Helper()
	testkit.RequireRoot(t, "mount")
	target := t.TempDir()
	if err := mount.All(ms, target); err != nil {
		t.Fatalf("mount %v: %v", ms, err)
	}
	done := false
	unmount := func() {
		if done {
			return
		}
		done = true
		for {
			// Stacked mounts come off one at a time.
			if err := unix.Unmount(target, 0); err != nil {
				if errors.Is(err, syscall.EINVAL) {
					return
				}
				if err := mount.Unmount(target); err != nil {
					t.Errorf("unmount %s: %v", target, err)
				}
				return
			}
		}
	}
	t.Cleanup(unmount)
	return target, unmount
}

func fsChmod(name string, perm uint32) fsOp {
	return func(dir string) error { return unix.Chmod(filepath.Join(dir, name), perm) }
}

func fsAppend(name, data string) fsOp {
	return func(dir string) error {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteString(data); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
}

// fsRename renames oldname to name: a rename the filesystem refuses
// across layers (EXDEV, as overlayfs does for a lower dir without
// redirect_dir) becomes a copy that keeps everything, hardlinks included
// (cp -a), then a removal.
func fsRename(oldname, name string) fsOp {
	return func(dir string) error {
		src, dst := filepath.Join(dir, oldname), filepath.Join(dir, name)
		err := os.Rename(src, dst)
		if !errors.Is(err, unix.EXDEV) {
			return err
		}
		if out, err := exec.Command("cp", "-a", "-T", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s after EXDEV: %v: %s", oldname, err, out)
		}
		return os.RemoveAll(src)
	}
}
