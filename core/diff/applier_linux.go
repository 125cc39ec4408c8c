package diff

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// OCI whiteout names.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// smallFile is the largest file whose contents are buffered and handed to a
// worker; larger files are written by the applying goroutine, so memory in
// flight stays bounded (jobs queued times this).
const smallFile = 256 << 10

// maxCachedDirs bounds the parent directory descriptors kept open.
const maxCachedDirs = 512

// tarError is the tar reader's failure (DataLoss unless the stream's own
// failure explains it).
type tarError struct{ err error }

func (e *tarError) Error() string { return "layer tar: " + e.err.Error() }
func (e *tarError) Unwrap() error { return e.err }

// applier applies one layer's entries onto root.
type applier struct {
	rootPath string
	root     *dirRef            // the root, held until close
	dirs     map[string]*dirRef // parent dir -> descriptor (cache, see open)
	umask    uint32
	res      *Result

	unpacked map[string]struct{} // names this layer wrote, for opaque dirs
	below    map[string]struct{} // dirs with a name this layer wrote below them
	dirTimes []dirTime           // set last, once dirs' contents are in

	pool *pool // nil: write files inline
}

// dirRef is an O_PATH descriptor of a directory, shared by the cache and
// the entries using it. Whoever gets one from parent holds a reference and
// releases it when done; the descriptor is closed only when the last holder
// lets go. So dropping or pruning the cache (a removal, an eviction) never
// closes a descriptor an entry is still using, and its number cannot be
// reused under it.
type dirRef struct {
	fd   int
	refs int // the applier's goroutine alone takes and releases them
	// path is the dir's path below the root when it was reached without a
	// symlink (real), as the cache's keys are.
	path string
	real bool
}

func (d *dirRef) hold() *dirRef {
	d.refs++
	return d
}

func (d *dirRef) release() {
	if d.refs--; d.refs == 0 {
		unix.Close(d.fd)
	}
}

// dirTime is a dir's times, set once its contents are in.
type dirTime struct {
	name         string
	atime, mtime time.Time
}

func newApplier(root string, workers int, res *Result) (*applier, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open apply root %s: %w", root, classifyErrno(err))
	}
	a := &applier{
		rootPath: root,
		root:     &dirRef{fd: fd, refs: 1, real: true},
		dirs:     map[string]*dirRef{},
		umask:    processUmask(),
		res:      res,
		unpacked: map[string]struct{}{},
		below:    map[string]struct{}{},
	}
	if workers > 0 {
		a.pool = newPool(workers)
	}
	return a, nil
}

// run applies every entry of the tar stream r.
func (a *applier) run(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if a.pool != nil {
			if err := a.pool.failed(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &tarError{err}
		}
		a.res.Entries++
		if err := a.entry(hdr, tr); err != nil {
			return err
		}
	}
	if a.pool != nil {
		if err := a.pool.wait(); err != nil {
			return err
		}
	}
	// Dirs' times last, in the tar's order (the last entry of a dir wins,
	// as for its mode): making their entries changed them.
	for _, d := range a.dirTimes {
		if err := a.dirTime(d); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) dirTime(d dirTime) error {
	parent, base := path.Split(d.name)
	pd, err := a.parent(d.name, strings.TrimSuffix(parent, "/"), false)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil // removed by a later entry
		}
		return err
	}
	defer pd.release()
	if err := unix.UtimesNanoAt(pd.fd, base, timespecs(d.atime, d.mtime), unix.AT_SYMLINK_NOFOLLOW); err != nil && err != unix.ENOENT {
		return entryErr(d.name, "set times", err)
	}
	return nil
}

// close releases the descriptors and stops the workers.
func (a *applier) close() error {
	var err error
	if a.pool != nil {
		err = a.pool.wait()
	}
	a.dropDirs()
	a.root.release()
	return err
}

// cleanName turns a tar name into a path relative to the root: "" is the
// root itself. A ".." component is refused; a leading "/" is dropped, as
// containerd does with absolute names.
func cleanName(name string) (string, error) {
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("layer entry %q: path traverses out with \"..\": %w", name, errdefs.ErrInvalidArgument)
		}
		out = append(out, p)
	}
	return strings.Join(out, "/"), nil
}

// entry applies one tar entry.
func (a *applier) entry(hdr *tar.Header, tr *tar.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "" {
		return nil // the root itself: containerd leaves the snapshot root alone
	}
	parent, base := path.Split(name)
	parent = strings.TrimSuffix(parent, "/")

	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(hdr.Name, parent, base)
	}

	pd, err := a.parent(hdr.Name, parent, true)
	if err != nil {
		return err
	}
	defer pd.release()
	pfd := pd.fd
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = a.dir(hdr, name, pd, base)
	case tar.TypeReg:
		err = a.file(hdr, pd, base, tr)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("layer entry %q: symlink to nothing: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		err = a.create(hdr.Name, pd, base, false, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) })
		if err == nil {
			a.res.Symlinks++
			err = a.meta(hdr, pfd, base, unix.S_IFLNK)
		}
	case tar.TypeLink:
		err = a.hardlink(hdr, name, pd, base)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		err = a.create(hdr.Name, pd, base, false, func() error { return unix.Mknodat(pfd, base, mode, dev) })
		if err == nil {
			a.res.Specials++
			err = a.meta(hdr, pfd, base, mode&unix.S_IFMT)
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("layer entry %q: tar type %q: %w", hdr.Name, hdr.Typeflag, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	a.wrote(name)
	return nil
}

// wrote records that this layer wrote name, for an opaque dir above it: the
// name stays, and so do the dirs on the way to it, even those the layer
// has no entry of (containerd removes those, and what this layer put below
// them, with them).
func (a *applier) wrote(name string) {
	a.unpacked[name] = struct{}{}
	for dir := name; ; {
		i := strings.LastIndexByte(dir, '/')
		if i < 0 {
			return
		}
		dir = dir[:i]
		if _, ok := a.below[dir]; ok {
			return
		}
		a.below[dir] = struct{}{}
	}
}

// create makes a node with mk; when the name is taken, it removes what is
// there (unless both are dirs: keep reports that) and tries once more.
func (a *applier) create(entry string, pd *dirRef, base string, isDir bool, mk func() error) error {
	err := mk()
	if err != unix.EEXIST {
		if err != nil {
			return entryErr(entry, "create", err)
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pd.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(entry, "stat existing", err)
	}
	if isDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return errKeep
	}
	if err := a.removeAll(pd, base, st.Mode&unix.S_IFMT); err != nil {
		return entryErr(entry, "replace existing", err)
	}
	if err := mk(); err != nil {
		return entryErr(entry, "create", err)
	}
	return nil
}

// errKeep says an existing directory is kept for a dir entry.
var errKeep = errors.New("keep existing directory")

func (a *applier) dir(hdr *tar.Header, name string, pd *dirRef, base string) error {
	pfd := pd.fd
	err := a.create(hdr.Name, pd, base, true, func() error { return unix.Mkdirat(pfd, base, 0o700) })
	kept := err == errKeep
	if err != nil && !kept {
		return err
	}
	a.res.Dirs++
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "chown", err)
	}
	if err := unix.Fchmodat(pfd, base, unixMode(hdr), 0); err != nil {
		return entryErr(hdr.Name, "chmod", err)
	}
	if err := a.xattrsAt(hdr, pfd, base, unix.S_IFDIR); err != nil {
		return err
	}
	a.dirTimes = append(a.dirTimes, dirTime{name, accessTime(hdr), hdr.ModTime})
	return nil
}

func (a *applier) file(hdr *tar.Header, pd *dirRef, base string, tr *tar.Reader) error {
	perm := uint32(hdr.Mode) & 0o777
	var fd int
	err := a.create(hdr.Name, pd, base, false, func() error {
		var err error
		fd, err = unix.Openat(pd.fd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		return err
	})
	if err != nil {
		return err
	}
	a.res.Files++
	a.res.FileBytes += hdr.Size
	j := &job{entry: hdr.Name, fd: fd, hdr: hdr, chmod: a.needChmod(hdr)}
	if a.pool != nil && hdr.Size <= smallFile {
		j.buf = a.pool.buffer(int(hdr.Size))
		if _, err := io.ReadFull(tr, j.buf); err != nil {
			unix.Close(fd)
			return &tarError{err}
		}
		return a.pool.submit(j)
	}
	if hdr.Size > 0 {
		if _, err := io.Copy(fdWriter(fd), tr); err != nil {
			unix.Close(fd)
			var te *tarError
			if errors.As(err, &te) {
				return err
			}
			return entryErr(hdr.Name, "write", err)
		}
	}
	if a.pool != nil {
		return a.pool.submit(j)
	}
	return j.finish()
}

func (a *applier) hardlink(hdr *tar.Header, name string, pd *dirRef, base string) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("layer entry %q: hardlink target %q traverses out with \"..\": %w", hdr.Name, hdr.Linkname, errdefs.ErrInvalidArgument)
	}
	if target == "" {
		return fmt.Errorf("layer entry %q: hardlink to the root: %w", hdr.Name, errdefs.ErrInvalidArgument)
	}
	if target == name {
		return nil
	}
	// The link's header sets the inode's metadata (see below): after the
	// target's, when this layer wrote the target and a worker may still be
	// finishing it.
	if _, ok := a.unpacked[target]; ok && a.pool != nil {
		if err := a.pool.flush(); err != nil {
			return err
		}
	}
	tparent, tbase := path.Split(target)
	tpd, err := a.parent(hdr.Name, strings.TrimSuffix(tparent, "/"), false)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("layer entry %q: hardlink target %q not in the root: %w", hdr.Name, hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		return err
	}
	defer tpd.release()
	err = a.create(hdr.Name, pd, base, false, func() error {
		// flags 0: link the target itself, never what a symlink points at.
		return unix.Linkat(tpd.fd, tbase, pd.fd, base, 0)
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("layer entry %q: hardlink target %q not in the root: %w", hdr.Name, hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		// linkat says EPERM for a directory: the layer's fault, not the host's.
		var st unix.Stat_t
		if errors.Is(err, unix.EPERM) && unix.Fstatat(tpd.fd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("layer entry %q: hardlink target %q is a directory: %w", hdr.Name, hdr.Linkname, errdefs.ErrInvalidArgument)
		}
		return err
	}
	a.res.Hardlinks++
	// containerd and Docker set the entry's owner, mode, xattrs and times on
	// the linked inode (tar writers copy them from it, so this changes
	// nothing in a layer they wrote).
	var st unix.Stat_t
	if err := unix.Fstatat(pd.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "stat hardlink", err)
	}
	return a.meta(hdr, pd.fd, base, st.Mode&unix.S_IFMT)
}

// whiteout applies a whiteout entry in dir parent.
func (a *applier) whiteout(entry, parent, base string) error {
	a.res.Whiteouts++
	if base == whiteoutOpaque {
		return a.opaque(entry, parent)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata: containerd skips it too
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fmt.Errorf("layer entry %q: whiteout of %q: %w", entry, target, errdefs.ErrInvalidArgument)
	}
	// The parents are made, as for any entry (containerd and Docker do so
	// too, and on overlay they show as dirs).
	pd, err := a.parent(entry, parent, true)
	if err != nil {
		return err
	}
	defer pd.release()
	var st unix.Stat_t
	if err := unix.Fstatat(pd.fd, target, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return entryErr(entry, "stat whiteout target", err)
	}
	if err := a.removeAll(pd, target, st.Mode&unix.S_IFMT); err != nil {
		return entryErr(entry, "whiteout", err)
	}
	return nil
}

// opaque empties dir of everything this layer did not write, through the
// mount (see the package doc).
func (a *applier) opaque(entry, dir string) error {
	pd, err := a.parent(entry, dir, true)
	if err != nil {
		return err
	}
	defer pd.release()
	if !pd.real {
		a.dropDirs() // emptyExcept's names are not the cache's keys
	}
	fd, err := unix.Openat(pd.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return entryErr(entry, "open opaque dir", err)
	}
	defer unix.Close(fd)
	if err := a.emptyExcept(fd, dir); err != nil {
		return entryErr(entry, "opaque dir", err)
	}
	return nil
}

// emptyExcept removes the entries of the open directory fd (whose name is
// dir) that this layer did not write, and recurses into those it did.
func (a *applier) emptyExcept(fd int, dir string) error {
	ents, err := readDir(fd)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.name
		if dir != "" {
			name = dir + "/" + e.name
		}
		_, wrote := a.unpacked[name]
		_, below := a.below[name]
		if !wrote && !below {
			if e.typ == unix.DT_DIR {
				a.forget(name)
			}
			if err := removeAllAt(fd, e.name, e.typ); err != nil {
				return err
			}
			continue
		}
		if e.typ != unix.DT_DIR {
			continue
		}
		sub, err := unix.Openat(fd, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = a.emptyExcept(sub, name)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// meta sets ownership, mode (not of a symlink), xattrs and times of base in
// pfd, a node of type typ (S_IFMT bits) made by a symlink, device, fifo or
// hardlink entry.
func (a *applier) meta(hdr *tar.Header, pfd int, base string, typ uint32) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "chown", err)
	}
	if typ != unix.S_IFLNK {
		if err := unix.Fchmodat(pfd, base, unixMode(hdr), 0); err != nil {
			return entryErr(hdr.Name, "chmod", err)
		}
	}
	if err := a.xattrsAt(hdr, pfd, base, typ); err != nil {
		return err
	}
	if err := unix.UtimesNanoAt(pfd, base, timespecs(accessTime(hdr), hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr.Name, "set times", err)
	}
	return nil
}

// xattrsAt sets the entry's xattrs on base in pfd without following it:
// through /proc/self/fd, as no *at call sets an xattr on a name.
//
// The kernel allows user.* xattrs on regular files and dirs only: on a node
// of another type (typ), one is skipped, as containerd does.
func (a *applier) xattrsAt(hdr *tar.Header, pfd int, base string, typ uint32) error {
	var p string
	for key, v := range xattrs(hdr) {
		if p == "" {
			p = "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + base
		}
		err := unix.Lsetxattr(p, key, []byte(v), 0)
		if err == unix.EPERM && strings.HasPrefix(key, "user.") && typ != unix.S_IFREG && typ != unix.S_IFDIR {
			continue
		}
		if err != nil && err != unix.ENOTSUP {
			return entryErr(hdr.Name, "set xattr "+key, err)
		}
	}
	return nil
}

// xattrs yields the entry's xattrs that keel sets: all but trusted.*, the
// administrator's namespace, where overlayfs keeps its own markers (a
// layer could forge an opaque dir or a redirect); containerd leaves them
// out too.
func xattrs(hdr *tar.Header) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for k, v := range hdr.PAXRecords {
			key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
			if !ok || strings.HasPrefix(key, "trusted.") {
				continue
			}
			if !yield(key, v) {
				return
			}
		}
	}
}

// needChmod reports whether a node made with the entry's permission bits
// needs a chmod: special bits, or bits the umask took.
func (a *applier) needChmod(hdr *tar.Header) bool {
	return hdr.Mode&0o7000 != 0 || uint32(hdr.Mode)&a.umask != 0
}

// parent returns a held reference to the directory dir (relative to the
// root; the caller releases it), resolved beneath the root, made with its
// missing parents when mkdir is set (NotFound otherwise). entry names the
// tar entry in errors.
func (a *applier) parent(entry, dir string, mkdir bool) (*dirRef, error) {
	if dir == "" {
		return a.root.hold(), nil
	}
	if d, ok := a.dirs[dir]; ok {
		return d.hold(), nil
	}
	d, err := a.open(dir)
	if err == unix.ENOENT && mkdir {
		if err = a.mkdirAll(dir); err == nil {
			d, err = a.open(dir)
		}
	}
	if err != nil {
		if err == unix.ENOENT && mkdir {
			// mkdirAll made what it could: a symlink leads nowhere.
			return nil, fmt.Errorf("layer entry %q: parent %q leads through a dangling symlink: %w", entry, dir, errdefs.ErrInvalidArgument)
		}
		if err == unix.ENOENT {
			return nil, fmt.Errorf("layer entry %q: parent %q: %w", entry, dir, errdefs.ErrNotFound)
		}
		return nil, resolveErr(entry, dir, err)
	}
	return d, nil
}

// open opens dir beneath the root and returns it held for the caller. The
// cache keeps only dirs reached without a symlink, so its keys are the
// dirs' real paths and a removal stales exactly the keys at and below the
// removed dir (forget); a dir reached through a symlink is opened anew for
// each entry.
func (a *applier) open(dir string) (*dirRef, error) {
	fd, err := openBeneath(a.root.fd, dir, unix.RESOLVE_NO_SYMLINKS)
	if err == unix.ELOOP {
		if fd, err = openBeneath(a.root.fd, dir, 0); err != nil {
			return nil, err
		}
		return &dirRef{fd: fd, refs: 1}, nil // not cached: see removeAll
	}
	if err != nil {
		return nil, err
	}
	if len(a.dirs) >= maxCachedDirs {
		a.dropDirs()
	}
	d := &dirRef{fd: fd, refs: 1, path: dir, real: true}
	a.dirs[dir] = d
	return d.hold(), nil
}

// mkdirAll makes dir and its missing parents (mode 0755, root-owned, as
// containerd does), resolving each beneath the root.
func (a *applier) mkdirAll(dir string) error {
	parts := strings.Split(dir, "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		fd, err := openBeneath(a.root.fd, prefix, 0)
		if err == nil {
			unix.Close(fd)
			continue
		}
		if err != unix.ENOENT {
			return err
		}
		pfd := a.root.fd
		if i > 0 {
			if pfd, err = openBeneath(a.root.fd, strings.Join(parts[:i], "/"), 0); err != nil {
				return err
			}
		}
		err = unix.Mkdirat(pfd, parts[i], 0o755)
		if err == nil {
			// the umask may have taken bits, and a setgid parent gives a
			// new dir its setgid bit
			err = unix.Fchmodat(pfd, parts[i], 0o755, 0)
		}
		if pfd != a.root.fd {
			unix.Close(pfd)
		}
		if err != nil && err != unix.EEXIST {
			return err
		}
	}
	return nil
}

// dropDirs lets go of the cache's references (entries holding one keep it).
func (a *applier) dropDirs() {
	for _, d := range a.dirs {
		d.release()
	}
	clear(a.dirs)
}

// forget drops the cached dirs at and below name, which is being removed.
func (a *applier) forget(name string) {
	for dir, d := range a.dirs {
		if dir == name || (strings.HasPrefix(dir, name) && dir[len(name)] == '/') {
			d.release()
			delete(a.dirs, dir)
		}
	}
}

// removeAll removes base in pd (of type typ, S_IFMT bits) and what is below
// it, never following a symlink. Only a dir can be cached or on the way to
// a cached one: the cache forgets those below its real path (all, when pd
// was reached through a symlink).
func (a *applier) removeAll(pd *dirRef, base string, typ uint32) error {
	dt := uint8(unix.DT_REG)
	if typ == unix.S_IFDIR {
		dt = unix.DT_DIR
		if pd.real {
			a.forget(path.Join(pd.path, base))
		} else {
			a.dropDirs()
		}
	}
	return removeAllAt(pd.fd, base, dt)
}

// removeAllAt removes name in dirfd and, for a dir, its contents first.
func removeAllAt(dirfd int, name string, dt uint8) error {
	if dt != unix.DT_DIR {
		err := unix.Unlinkat(dirfd, name, 0)
		if err != unix.EISDIR {
			if err == unix.ENOENT {
				return nil
			}
			return err
		}
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	ents, err := readDir(fd)
	if err == nil {
		for _, e := range ents {
			if err = removeAllAt(fd, e.name, e.typ); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

type dirEnt struct {
	name string
	typ  uint8
}

// readDir lists the open directory fd (without "." and "..").
func readDir(fd int) ([]dirEnt, error) {
	var out []dirEnt
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) > 0; {
			d := (*unix.Dirent)(unsafe.Pointer(&b[0]))
			rec := b[:d.Reclen]
			b = b[d.Reclen:]
			nameb := rec[unsafe.Offsetof(d.Name):]
			if i := bytes.IndexByte(nameb, 0); i >= 0 {
				nameb = nameb[:i]
			}
			name := string(nameb)
			if name == "." || name == ".." {
				continue
			}
			out = append(out, dirEnt{name, d.Type})
		}
	}
}

// openBeneath opens dir (relative to root) as an O_PATH directory, never
// resolving a symlink or ".." out of root; resolve adds RESOLVE_ flags.
func openBeneath(root int, dir string, resolve uint64) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | resolve,
	}
	for {
		fd, err := unix.Openat2(root, dir, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a concurrent rename elsewhere; try again
		}
		return fd, err
	}
}

// resolveErr names why dir could not be resolved for entry.
func resolveErr(entry, dir string, err error) error {
	switch err {
	case unix.EXDEV:
		return fmt.Errorf("layer entry %q: parent %q leads out of the root through a symlink: %w", entry, dir, errdefs.ErrInvalidArgument)
	case unix.ELOOP:
		return fmt.Errorf("layer entry %q: parent %q: too many symlinks: %w", entry, dir, errdefs.ErrInvalidArgument)
	case unix.ENOTDIR:
		return fmt.Errorf("layer entry %q: parent %q is not a directory: %w", entry, dir, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("layer entry %q: parent %q: %w", entry, dir, classifyErrno(err))
}

// entryErr wraps a failed system call on entry.
func entryErr(entry, what string, err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("layer entry %q: %s: %w", entry, what, classifyErrno(errno))
	}
	return fmt.Errorf("layer entry %q: %s: %w", entry, what, err)
}

// classifyErrno gives an errno its class, keeping the errno for errors.Is.
func classifyErrno(err error) error {
	switch err {
	case unix.ENOENT:
		return fmt.Errorf("%w (%w)", errdefs.ErrNotFound, err)
	case unix.ENOSPC, unix.EDQUOT, unix.EMFILE, unix.ENFILE:
		return fmt.Errorf("%w (%w)", errdefs.ErrResourceExhausted, err)
	case unix.EPERM, unix.EACCES, unix.EROFS:
		return fmt.Errorf("%w (%w)", errdefs.ErrPermissionDenied, err)
	case unix.EEXIST, unix.ENOTDIR, unix.EISDIR, unix.ENOTEMPTY, unix.EINVAL, unix.EXDEV:
		return fmt.Errorf("%w (%w)", errdefs.ErrInvalidArgument, err)
	}
	return err
}

// unixMode is the entry's permission and special bits.
func unixMode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

// accessTime is the entry's atime, or its mtime when the tar has none (as
// containerd does, taking the later of the two).
func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.After(hdr.ModTime) {
		return hdr.AccessTime
	}
	return hdr.ModTime
}

func timespecs(atime, mtime time.Time) []unix.Timespec {
	return []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
}

// processUmask reads the umask from /proc without changing it (umask(2)
// would race with other goroutines making files).
func processUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777 // unknown: always chmod
}

// job is a regular file made by the applying goroutine whose contents (buf,
// when buffered) and metadata a worker finishes.
type job struct {
	entry string
	fd    int
	hdr   *tar.Header
	buf   []byte
	chmod bool
}

// finish writes the buffered contents, then sets ownership, mode, xattrs and
// times, in that order: a chown clears setuid bits and a write drops
// security.capability, so both come before chmod and xattrs.
func (j *job) finish() error {
	defer unix.Close(j.fd)
	if len(j.buf) > 0 {
		if _, err := fdWriter(j.fd).Write(j.buf); err != nil {
			return entryErr(j.entry, "write", err)
		}
	}
	hdr := j.hdr
	if err := unix.Fchown(j.fd, hdr.Uid, hdr.Gid); err != nil {
		return entryErr(j.entry, "chown", err)
	}
	if j.chmod {
		if err := unix.Fchmod(j.fd, unixMode(hdr)); err != nil {
			return entryErr(j.entry, "chmod", err)
		}
	}
	for key, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(j.fd, key, []byte(v), 0); err != nil && err != unix.ENOTSUP {
			return entryErr(j.entry, "set xattr "+key, err)
		}
	}
	if err := futimens(j.fd, timespecs(accessTime(hdr), hdr.ModTime)); err != nil {
		return entryErr(j.entry, "set times", err)
	}
	if hdr.Size > 0 {
		// Start the contents' writeback now, while the layer is still
		// being applied, so the snapshotter's sync at Commit finds little
		// left to do. Only a hint: its failure changes nothing.
		_ = unix.SyncFileRange(j.fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	return nil
}

// futimens sets the times of the open file fd (utimensat with a NULL path).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// fdWriter writes to a descriptor, retrying short writes.
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(w), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// pool finishes regular files in a few goroutines.
type pool struct {
	jobs chan *job
	wg   sync.WaitGroup
	busy sync.WaitGroup // jobs submitted and not finished
	once sync.Once

	mu  sync.Mutex
	err error

	small sync.Pool // buffers of smallBuf bytes
}

// smallBuf is the size of the pooled buffers; larger files allocate.
const smallBuf = 32 << 10

func newPool(workers int) *pool {
	p := &pool{jobs: make(chan *job, 4*workers)}
	p.small.New = func() any { b := make([]byte, smallBuf); return &b }
	for range workers {
		p.wg.Go(func() {
			for j := range p.jobs {
				if p.failed() != nil {
					unix.Close(j.fd)
				} else if err := j.finish(); err != nil {
					p.fail(err)
				}
				p.release(j.buf)
				p.busy.Done()
			}
		})
	}
	return p
}

func (p *pool) buffer(n int) []byte {
	if n <= smallBuf {
		return (*p.small.Get().(*[]byte))[:n]
	}
	return make([]byte, n)
}

func (p *pool) release(b []byte) {
	if cap(b) == smallBuf {
		b = b[:smallBuf]
		p.small.Put(&b)
	}
}

func (p *pool) submit(j *job) error {
	if err := p.failed(); err != nil {
		unix.Close(j.fd)
		return err
	}
	p.busy.Add(1)
	p.jobs <- j
	return nil
}

// flush waits until every job submitted is finished and returns the first
// error.
func (p *pool) flush() error {
	p.busy.Wait()
	return p.failed()
}

func (p *pool) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *pool) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait ends the workers once the queue is done and returns the first error.
func (p *pool) wait() error {
	p.once.Do(func() {
		close(p.jobs)
		p.wg.Wait()
	})
	return p.failed()
}
