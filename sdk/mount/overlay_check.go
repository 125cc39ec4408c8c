package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/sweep"
)

// OverlayCheckPrefix names CheckOverlay's scratch dirs: one a killed
// process left is found by it (SweepOverlayChecks).
const OverlayCheckPrefix = ".overlay-check-"

// SweepOverlayChecks removes the scratch dirs (and their mounts) that
// CheckOverlay calls in dir killed before they were done left there.
func SweepOverlayChecks(dir string) ([]sweep.Leftover, error) {
	return sweep.Sweep([]string{filepath.Join(sweep.Escape(filepath.Clean(dir)), OverlayCheckPrefix+"*")}, nil)
}

// CheckOverlay reports whether the filesystem holding dir can host overlay
// upper and work dirs: it lists entry types (d_type), and an overlay with
// its upper dir there mounts and records a whiteout (a lower file removed)
// and an opaque dir (a lower dir removed and made again). It works in a
// scratch dir under dir, removed before it returns, and needs the
// privilege to mount. A filesystem that cannot is a FailedPrecondition
// error naming it (overlay itself, for one, is refused as an upper). Errors
// keep what caused them: a caller without the privilege to mount gets one
// that is EPERM (errors.Is(err, os.ErrPermission)) and no FailedPrecondition,
// as the filesystem was not judged.
func CheckOverlay(dir string) (err error) {
	scratch, err := os.MkdirTemp(dir, OverlayCheckPrefix)
	if err != nil {
		return fmt.Errorf("overlay check in %s: %w", dir, err)
	}
	defer func() {
		if rerr := os.RemoveAll(scratch); rerr != nil && err == nil {
			err = fmt.Errorf("overlay check: %w", rerr)
		}
	}()
	refuse := func(what string, cause error) error {
		return fmt.Errorf("%s (%s) cannot host overlay upper dirs: %s: %w: %w",
			dir, FSType(dir), what, cause, errdefs.ErrFailedPrecondition)
	}
	p := func(name string) string { return filepath.Join(scratch, name) }
	for _, d := range []string{"lower/gone-dir", "upper", "work", "merged"} {
		if err := os.MkdirAll(p(d), 0o755); err != nil {
			return fmt.Errorf("overlay check: %w", err)
		}
	}
	for _, f := range []string{"lower/gone-file", "lower/gone-dir/f"} {
		if err := os.WriteFile(p(f), nil, 0o644); err != nil {
			return fmt.Errorf("overlay check: %w", err)
		}
	}
	if ok, err := hasDType(p("lower")); err != nil {
		return fmt.Errorf("overlay check: %w", err)
	} else if !ok {
		return refuse("directory listings", errors.New("no entry types (d_type)"))
	}
	m := Overlay([]string{p("lower")}, p("upper"), p("work"))
	if err := m.Mount(p("merged")); errors.Is(err, unix.EPERM) {
		return fmt.Errorf("overlay check in %s: %w", dir, err)
	} else if err != nil {
		return refuse("scratch overlay", err)
	}
	// Unmount falls back to a lazy unmount on EBUSY: a process forked
	// meanwhile by another goroutine holds the fds opened in the mount
	// below until it execs.
	defer Unmount(p("merged"))
	if err := os.Remove(p("merged/gone-file")); err != nil {
		return refuse("whiteout", err)
	}
	if err := os.RemoveAll(p("merged/gone-dir")); err != nil {
		return refuse("remove a lower dir", err)
	}
	if err := os.Mkdir(p("merged/gone-dir"), 0o755); err != nil {
		return refuse("opaque dir", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p("upper/gone-file"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return refuse("whiteout", errors.New("no 0/0 character device in the upper dir"))
	}
	return nil
}

// hasDType reports whether listing dir (which holds entries) gives their
// types, as overlay needs of its upper and work dirs.
func hasDType(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := unix.Getdents(int(f.Fd()), buf)
	if err != nil {
		return false, fmt.Errorf("getdents %s: %w", dir, err)
	}
	// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
	const typeOff = 18
	for off := 0; off+typeOff < n; {
		reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
		if reclen == 0 {
			break
		}
		if buf[off+typeOff] == unix.DT_UNKNOWN {
			return false, nil
		}
		off += reclen
	}
	if n == 0 {
		return false, errors.New("empty listing")
	}
	return true, nil
}

// FSType names the filesystem holding path, for messages.
func FSType(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown filesystem"
	}
	switch st.Type {
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.MSDOS_SUPER_MAGIC:
		return "vfat"
	}
	return fmt.Sprintf("filesystem 0x%x", st.Type)
}
