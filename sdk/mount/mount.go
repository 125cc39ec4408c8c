// Package mount describes filesystem mounts as snapshotters return them and
// runtimes consume them, and mounts them on Linux.
package mount

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	typesv1 "github.com/keel-runtime/keel/sdk/proto/keel/types/v1"
)

// Mount is one filesystem mount: what mount(8) would be given.
type Mount struct {
	Type    string
	Source  string
	Target  string
	Options []string
}

// ToProto converts mounts for the wire (keel.types.v1, on keeld's API
// and the plugin protocol alike).
func ToProto(ms []Mount) []*typesv1.Mount {
	out := make([]*typesv1.Mount, len(ms))
	for i, m := range ms {
		out[i] = &typesv1.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
	}
	return out
}

// FromProto converts mounts from the wire.
func FromProto(ms []*typesv1.Mount) []Mount {
	out := make([]Mount, len(ms))
	for i, m := range ms {
		out[i] = Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
	}
	return out
}

// flagOptions are the mount(8) options that are flags, not data.
var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"noatime":     {false, unix.MS_NOATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"remount":     {false, unix.MS_REMOUNT},
}

// parseOptions splits options into mount flags and the data string.
func parseOptions(options []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range options {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		rest = append(rest, o)
	}
	return flags, strings.Join(rest, ",")
}

// Mount mounts m on target. A read-only bind mount is made in two steps, as
// the kernel ignores MS_RDONLY on the first bind. Options too long for
// mount(2) are set one by one through the new mount API (see Long options).
func (m Mount) Mount(target string) error {
	flags, data := parseOptions(m.Options)
	if !fitsPage(data) && flags&(unix.MS_BIND|unix.MS_REMOUNT) == 0 {
		if err := m.mountFS(target, flags); err != nil {
			return fmt.Errorf("mount %s %s on %s (%d options): %w", m.Type, m.Source, target, len(m.Options), err)
		}
		return nil
	}
	typ := m.Type
	if flags&unix.MS_BIND != 0 {
		typ = ""
	}
	if err := unix.Mount(m.Source, target, typ, flags, data); err != nil {
		return fmt.Errorf("mount %s %s on %s (%s): %w", m.Type, m.Source, target, strings.Join(m.Options, ","), err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// All mounts every mount on target, in order.
func All(mounts []Mount, target string) error {
	for i, m := range mounts {
		if err := m.Mount(target); err != nil {
			for j := i - 1; j >= 0; j-- {
				unix.Unmount(target, unix.MNT_DETACH)
			}
			return err
		}
	}
	return nil
}

// Unmount unmounts target, detaching it if it is busy.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		if err == unix.EBUSY {
			return unix.Unmount(target, unix.MNT_DETACH)
		}
		if err == unix.EINVAL { // not a mount point
			return nil
		}
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
