package conformance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// Loopback is a filesystem made in a sparse image file, attached to a loop
// device and mounted: a btrfs for the btrfs snapshotter on a host whose
// disks are not btrfs, a small ext4 to fill up. Close takes it all down.
type Loopback struct {
	// Dir is where the filesystem is mounted.
	Dir string
	// Device is the loop device, e.g. /dev/loop3.
	Device string

	image  string
	closed bool
}

// DefaultLoopbackSize is the size of the image LoopbackBtrfs makes: room
// for the suite's 10,000-snapshot walk beside the other cases. The image
// is sparse, so the host's disk holds only what is written.
const DefaultLoopbackSize = 4 << 30

// ScratchMountOptions mount a loopback btrfs whose contents need not
// survive a host crash: without barriers, btrfs's flushes do not each
// become an fsync of the image file (10x faster snapshot creation here).
// Benchmarks mount with barriers, as a real disk would be.
const ScratchMountOptions = "nobarrier"

// NewLoopbackBtrfs makes a btrfs filesystem of size bytes in an image file
// under dir (with mkfs.btrfs from btrfs-progs), attaches it to a free loop
// device and mounts it at dir/mnt with mount options (comma-separated
// btrfs options, e.g. ScratchMountOptions, or none). It needs root.
// Whatever fails midway, nothing is left attached or mounted; after
// success the caller must Close it.
func NewLoopbackBtrfs(dir string, size int64, options string) (*Loopback, error) {
	// Metadata single, not dup: a scratch filesystem, written half as much.
	return NewLoopback(dir, size, "btrfs", []string{"-q", "-f", "-m", "single"}, options)
}

// NewLoopback is NewLoopbackBtrfs for a filesystem of type fstype, made by
// mkfs.<fstype> with mkfsArgs before the image path (e.g. "ext4" with
// "-q", "-m", "0" for a small ext4 with no reserved blocks).
func NewLoopback(dir string, size int64, fstype string, mkfsArgs []string, options string) (_ *Loopback, err error) {
	mkfs, err := exec.LookPath("mkfs." + fstype)
	if err != nil {
		return nil, fmt.Errorf("loopback %s: mkfs.%s not found: %w", fstype, fstype, err)
	}
	l := &Loopback{Dir: filepath.Join(dir, "mnt"), image: filepath.Join(dir, fstype+".img")}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(l.image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("loopback %s: size the image: %w", fstype, err)
	}
	if out, err := exec.Command(mkfs, append(mkfsArgs, l.image)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("loopback %s: mkfs.%s %s: %w: %s", fstype, fstype, l.image, err, strings.TrimSpace(string(out)))
	}
	loop, err := attachLoop(l.image)
	if err != nil {
		return nil, fmt.Errorf("loopback %s: %w", fstype, err)
	}
	l.Device = loop.Name()
	// The device is attached with autoclear: it detaches when the last
	// user goes, the mount once unmounted, or this file if mounting fails.
	defer loop.Close()
	if err := unix.Mount(l.Device, l.Dir, fstype, 0, options); err != nil {
		return nil, fmt.Errorf("loopback %s: mount %s on %s: %w", fstype, l.Device, l.Dir, err)
	}
	return l, nil
}

// Close unmounts the filesystem, makes sure the loop device is detached,
// and deletes the image. It may be called more than once.
func (l *Loopback) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	if err := unmountRetry(l.Dir); err != nil {
		errs = append(errs, err)
	}
	if l.Device != "" {
		if err := detachLoop(l.Device, l.image); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(l.image); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	os.Remove(l.Dir)
	return errors.Join(errs...)
}

// unmountRetry unmounts dir, waiting out a short busy spell (a process
// just exiting), then detaching lazily so the loop device still goes
// once the last user does. A dir that is not mounted is no error.
func unmountRetry(dir string) error {
	for range 50 {
		err := unix.Unmount(dir, 0)
		switch {
		case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return fmt.Errorf("unmount %s: busy, detached lazily", dir)
}

// attachLoop attaches image to a free loop device, with autoclear.
func attachLoop(image string) (*os.File, error) {
	backing, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	// Another process may take the free device between the two calls:
	// LOOP_CONFIGURE then fails with EBUSY, and we ask again.
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			// No devtmpfs (some containers): make the node ourselves.
			if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("make %s: %w", path, err)
			}
		}
		dev, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], image)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach %s to %s: %w", image, path, err)
		}
	}
	return nil, fmt.Errorf("attach %s: no loop device stayed free", image)
}

// detachLoop detaches device if it still holds image (autoclear normally
// did it at unmount). It waits a little, as autoclear runs when the last
// reference drops, which an unmount may not have done yet.
func detachLoop(device, image string) error {
	backing := filepath.Join("/sys/block", filepath.Base(device), "loop", "backing_file")
	// detached tells whether the device no longer holds image (or was
	// already reused for another one).
	detached := func() bool {
		b, err := os.ReadFile(backing)
		return err != nil || strings.TrimSpace(string(b)) != image
	}
	waitDetached := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
			if detached() {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
		}
	}
	// A loaded machine may take a while to drop the last reference (a
	// plugin still exiting, a lazy unmount).
	if waitDetached(3 * time.Second) {
		return nil
	}
	dev, err := os.OpenFile(device, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("detach %s: %w", device, err)
	}
	err = unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
	dev.Close() // the kernel finishes the detach at this last close
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", device, err)
	}
	if !waitDetached(5 * time.Second) {
		return fmt.Errorf("detach %s: still attached to %s: %w", device, image, unix.EBUSY)
	}
	return nil
}

// FixtureT is what LoopbackBtrfs needs of a test: *testing.T, *testing.B
// and the suites' T all fit.
type FixtureT interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	TempDir() string
}

// LoopbackBtrfs mounts a fresh loopback btrfs (DefaultLoopbackSize,
// ScratchMountOptions) for the test and returns where; t.Cleanup unmounts it, detaches the loop
// device and deletes the image, also when the test fails. Without root or
// mkfs.btrfs it skips, or fails when strict (sdk/testkit).
func LoopbackBtrfs(t FixtureT) string {
	t.Helper()
	testkit.RequireRoot(t, "mount a loopback btrfs")
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		testkit.SkipOrFail(t, "a loopback btrfs needs mkfs.btrfs (btrfs-progs): %v", err)
	}
	l, err := NewLoopbackBtrfs(t.TempDir(), DefaultLoopbackSize, ScratchMountOptions)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("tear down loopback btrfs: %v", err)
		}
	})
	return l.Dir
}
