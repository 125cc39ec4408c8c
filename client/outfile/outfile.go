// Package outfile writes a file the user named — the one way keel's commands
// write a user-named path, so that none replaces what it should write into.
//
//   - "-" is standard output.
//   - A symlink is followed: the target is written, the link stays.
//   - A device or FIFO is written through, opened write-only as it is
//     (neither truncated nor replaced): /dev/null stays /dev/null.
//   - A regular file, or a path that does not exist yet, is written to a
//     temporary file next to it that Commit renames over it, so a failed
//     write leaves an existing file as it was and no partial file behind.
//     An existing file's mode (and owner, where allowed) is kept; its hard
//     links keep the old contents.
//   - A directory or socket is refused.
//
// Only the path named (or what its symlinks lead to) is ever replaced. (A
// task's --log FILE is opened by the runtime plugin, for appending, without
// O_TRUNC: the same rule, with nothing to replace.)
package outfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Stdout is the path that means standard output.
const Stdout = "-"

// maxLinks bounds a chain of symlinks, as the kernel's ELOOP does.
const maxLinks = 40

// File is an output being written. Commit makes it final; Abort (a no-op
// after Commit) drops what a temporary file holds.
type File struct {
	w      io.Writer
	f      *os.File // nil for stdout
	target string   // the path renamed over; "" when written through
	done   bool
}

// Create opens path for writing as the package doc says; stdout is written
// for "-". An error names the path and what is wrong with it.
func Create(path string, stdout io.Writer) (*File, error) {
	if path == Stdout {
		return &File{w: stdout}, nil
	}
	if path == "" {
		return nil, fmt.Errorf("output file: empty path: %w", errdefs.ErrInvalidArgument)
	}
	target, fi, err := resolve(path)
	if err != nil {
		return nil, err
	}
	switch {
	case fi != nil && fi.IsDir():
		return nil, fmt.Errorf("output file %s: %s is a directory: %w", path, target, errdefs.ErrInvalidArgument)
	case fi != nil && fi.Mode()&fs.ModeSocket != 0:
		return nil, fmt.Errorf("output file %s: %s is a socket: %w", path, target, errdefs.ErrInvalidArgument)
	case fi != nil && !fi.Mode().IsRegular():
		// A device or FIFO: write through it. O_WRONLY without O_TRUNC or
		// O_CREATE never turns it into anything else.
		f, err := os.OpenFile(target, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("output file %s: %w", path, err)
		}
		return &File{w: f, f: f}, nil
	}
	mode := fs.FileMode(0o644)
	if fi != nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("output file %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("output file %s: %w", path, err)
	}
	// The replacement keeps the file's owner where this user may give it
	// (root writing into someone's file).
	if st, ok := statOf(fi); ok && (int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
	return &File{w: f, f: f, target: target}, nil
}

func statOf(fi fs.FileInfo) (*syscall.Stat_t, bool) {
	if fi == nil {
		return nil, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok
}

// resolve follows path's symlinks to the file they lead to; fi is nil when
// that does not exist (a new file, or a dangling link's target).
func resolve(path string) (string, fs.FileInfo, error) {
	p := path
	for range maxLinks {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return p, nil, nil
		}
		if err != nil {
			return "", nil, fmt.Errorf("output file %s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return p, fi, nil
		}
		link, err := os.Readlink(p)
		if err != nil {
			return "", nil, fmt.Errorf("output file %s: %w", path, err)
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(p), link)
		}
		p = link
	}
	return "", nil, fmt.Errorf("output file %s: too many levels of symbolic links: %w", path, errdefs.ErrInvalidArgument)
}

// Write writes to the output.
func (o *File) Write(p []byte) (int, error) { return o.w.Write(p) }

// Commit ends the output: a temporary file is synced and renamed over its
// target; a file written through is closed.
func (o *File) Commit() error {
	if o.done {
		return fmt.Errorf("output file: already ended: %w", errdefs.ErrFailedPrecondition)
	}
	o.done = true
	if o.f == nil {
		return nil
	}
	if o.target == "" {
		return o.f.Close()
	}
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.f.Name(), o.target)
	}
	if err != nil {
		os.Remove(o.f.Name())
	}
	return err
}

// Abort ends a failed output: a temporary file is removed and its target
// left as it was. Bytes written through a device or FIFO are gone already.
func (o *File) Abort() {
	if o.done {
		return
	}
	o.done = true
	if o.f == nil {
		return
	}
	o.f.Close()
	if o.target != "" {
		os.Remove(o.f.Name())
	}
}
