package mount

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Long options.
//
// mount(2) copies its data string into one page, so a mount whose options
// join to a page or more cannot be made with it; an overlay over a deep
// chain of layers gets there (128 lower dirs of 40 bytes each). Mount makes
// such a mount with the new mount API instead: fsopen(2), one fsconfig(2)
// call per option, fsmount(2) and move_mount(2) (Linux 5.2+). Each option
// value then only has to fit fsconfig's own limit of 256 bytes. For
// overlay, Overlay lists the lower dirs one per option, as lowerdir+=DIR
// (Linux 6.8+), when the classic lowerdir=A:B:C would not fit a page.
//
// Consumers that mount with mount(2) themselves (older mount(8), runc) can
// mount every overlay whose options fit a page, which Overlay keeps in the
// classic form.

// pageSize bounds mount(2)'s data string, its terminating NUL included.
var pageSize = os.Getpagesize()

// fitsPage reports whether data can be handed to mount(2).
func fitsPage(data string) bool { return len(data) < pageSize }

// Overlay returns the overlay mount of lowers, topmost first, with upper
// and work when upper is not empty (else the mount is read-only), and
// extra options (e.g. "index=off") after them. Its options use lowerdir=
// when they fit mount(2)'s page, else one lowerdir+= per lower dir, which
// Mount sets through fsconfig(2).
func Overlay(lowers []string, upper, work string, extra ...string) Mount {
	opts := make([]string, 0, len(lowers)+len(extra)+2)
	tail := make([]string, 0, len(extra)+2)
	if upper != "" {
		tail = append(tail, "upperdir="+upper, "workdir="+work)
	}
	tail = append(tail, extra...)
	classic := append(append(opts, "lowerdir="+strings.Join(lowers, ":")), tail...)
	if _, data := parseOptions(classic); fitsPage(data) {
		return Mount{Type: "overlay", Source: "overlay", Options: classic}
	}
	for _, l := range lowers {
		opts = append(opts, "lowerdir+="+l)
	}
	return Mount{Type: "overlay", Source: "overlay", Options: append(opts, tail...)}
}

// mountAttrs are the mount flags fsmount(2) takes as attributes.
var mountAttrs = []struct{ flag, attr uintptr }{
	{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
	{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
	{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
	{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
	{unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME},
	{unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
	{unix.MS_RELATIME, unix.MOUNT_ATTR_RELATIME},
}

// mountFS mounts m on target through the new mount API, setting each data
// option on its own; see Long options.
func (m Mount) mountFS(target string, flags uintptr) error {
	fd, err := unix.Fsopen(m.Type, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen %s: %w", m.Type, err)
	}
	defer unix.Close(fd)
	fail := func(what string, err error) error {
		if msg := fsMessages(fd); msg != "" {
			return fmt.Errorf("%s: %w (%s)", what, err, msg)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if m.Source != "" {
		if err := unix.FsconfigSetString(fd, "source", m.Source); err != nil {
			return fail("fsconfig source", err)
		}
	}
	if flags&unix.MS_SYNCHRONOUS != 0 {
		if err := unix.FsconfigSetFlag(fd, "sync"); err != nil {
			return fail("fsconfig sync", err)
		}
	}
	for _, o := range m.Options {
		if _, ok := flagOptions[o]; ok {
			continue
		}
		key, value, hasValue := strings.Cut(o, "=")
		if hasValue {
			err = unix.FsconfigSetString(fd, key, value)
		} else {
			err = unix.FsconfigSetFlag(fd, key)
		}
		if err != nil {
			return fail("fsconfig "+o, err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("fsconfig create", err)
	}
	var attrs uintptr
	for _, a := range mountAttrs {
		if flags&a.flag != 0 {
			attrs |= a.attr
		}
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, int(attrs))
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", target, err)
	}
	return nil
}

// fsMessages reads what the filesystem said about a failed fsconfig (the
// kernel queues it on the context fd), one message after another.
func fsMessages(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 8 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, string(bytes.TrimSpace(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}
