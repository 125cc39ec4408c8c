package oci

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// CapabilityName is cap's canonical name ("CAP_NET_ADMIN" for "net_admin",
// "NET_ADMIN" or "cap_net_admin"), or "ALL"; an InvalidArgument error for
// a capability Linux does not have.
func CapabilityName(c string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(c))
	if n == "ALL" {
		return n, nil
	}
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if !slices.Contains(allCapabilities(), n) {
		return "", fmt.Errorf("capability %q: no such capability: %w", c, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// WithCapabilities changes the capability set as Docker's --cap-add and
// --cap-drop do: drop "ALL" starts from nothing, add "ALL" gives every
// capability this host has (see WithPrivileged) but the dropped ones; otherwise drop comes first, then add.
// Names are taken as CapabilityName takes them.
func WithCapabilities(add, drop []string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		norm := func(names []string) ([]string, error) {
			out := make([]string, 0, len(names))
			for _, c := range names {
				n, err := CapabilityName(c)
				if err != nil {
					return nil, err
				}
				out = append(out, n)
			}
			return out, nil
		}
		add, err := norm(add)
		if err != nil {
			return err
		}
		drop, err := norm(drop)
		if err != nil {
			return err
		}
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		if s.Process.Capabilities == nil {
			s.Process.Capabilities = &specs.LinuxCapabilities{}
		}
		var caps []string
		switch {
		case slices.Contains(add, "ALL") && slices.Contains(drop, "ALL"):
			return fmt.Errorf("capabilities: add ALL and drop ALL: pick one: %w", errdefs.ErrInvalidArgument)
		case slices.Contains(add, "ALL"):
			for _, c := range hostCapabilities() {
				if !slices.Contains(drop, c) {
					caps = append(caps, c)
				}
			}
		case slices.Contains(drop, "ALL"):
			caps = add
		default:
			for _, c := range s.Process.Capabilities.Bounding {
				if !slices.Contains(drop, c) {
					caps = append(caps, c)
				}
			}
			caps = append(caps, add...)
		}
		slices.Sort(caps)
		caps = slices.Compact(caps)
		if caps == nil {
			caps = []string{}
		}
		c := s.Process.Capabilities
		c.Bounding, c.Effective, c.Permitted = caps, slices.Clone(caps), slices.Clone(caps)
		keep := func(set []string) []string {
			return slices.DeleteFunc(set, func(n string) bool { return !slices.Contains(caps, n) })
		}
		c.Inheritable, c.Ambient = keep(c.Inheritable), keep(c.Ambient)
		return nil
	}
}

// WithNoNewPrivileges sets no_new_privs (sdk/runtime's DefaultSpec sets it).
func WithNoNewPrivileges(on bool) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		s.Process.NoNewPrivileges = on
		return nil
	}
}

// Device is a host device node to give the container.
type Device struct {
	Host        string // the node on this host
	Container   string // its path in the container; Host when empty
	Permissions string // a subset of "rwm"; "rwm" when empty
}

// ParseDevice parses Docker's --device HOST[:CONTAINER][:PERMISSIONS].
func ParseDevice(s string) (Device, error) {
	parts := strings.Split(s, ":")
	var d Device
	switch len(parts) {
	case 3:
		d = Device{Host: parts[0], Container: parts[1], Permissions: parts[2]}
		if d.Permissions == "" {
			return d, fmt.Errorf("device %q: empty permissions (want some of r, w and m): %w", s, errdefs.ErrInvalidArgument)
		}
	case 2:
		// HOST:PERMISSIONS when the second part reads as permissions.
		if validDevicePerms(parts[1]) {
			d = Device{Host: parts[0], Permissions: parts[1]}
		} else {
			d = Device{Host: parts[0], Container: parts[1]}
		}
	case 1:
		d = Device{Host: parts[0]}
	default:
		return d, fmt.Errorf("device %q: want HOST[:CONTAINER][:PERMISSIONS]: %w", s, errdefs.ErrInvalidArgument)
	}
	if err := d.check(); err != nil {
		return d, fmt.Errorf("device %q: %w", s, err)
	}
	return d, nil
}

func validDevicePerms(p string) bool {
	if p == "" || len(p) > 3 {
		return false
	}
	for _, c := range p {
		if !strings.ContainsRune("rwm", c) || strings.Count(p, string(c)) > 1 {
			return false
		}
	}
	return true
}

func (d Device) check() error {
	if !strings.HasPrefix(d.Host, "/") {
		return fmt.Errorf("host path %q: not absolute: %w", d.Host, errdefs.ErrInvalidArgument)
	}
	if d.Container != "" && !strings.HasPrefix(d.Container, "/") {
		return fmt.Errorf("container path %q: not absolute: %w", d.Container, errdefs.ErrInvalidArgument)
	}
	if d.Permissions != "" && !validDevicePerms(d.Permissions) {
		return fmt.Errorf("permissions %q: want some of r, w and m: %w", d.Permissions, errdefs.ErrInvalidArgument)
	}
	return nil
}

// WithDevices gives the container host device nodes, as Docker's --device
// does: each is created in the container (same type, numbers, mode and
// owner as on this host) and allowed in its device cgroup.
func WithDevices(devs ...Device) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		for _, d := range devs {
			if err := d.check(); err != nil {
				return fmt.Errorf("device %s: %w", d.Host, err)
			}
			var st unix.Stat_t
			if err := unix.Stat(d.Host, &st); err != nil {
				return fmt.Errorf("device %s: %w: %w", d.Host, err, errdefs.ErrInvalidArgument)
			}
			var typ string
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFCHR:
				typ = "c"
			case unix.S_IFBLK:
				typ = "b"
			default:
				return fmt.Errorf("device %s: not a device node: %w", d.Host, errdefs.ErrInvalidArgument)
			}
			path, perms := d.Container, d.Permissions
			if path == "" {
				path = d.Host
			}
			if perms == "" {
				perms = "rwm"
			}
			major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
			mode := os.FileMode(st.Mode & 0o777)
			uid, gid := st.Uid, st.Gid
			s.Linux.Devices = slices.DeleteFunc(s.Linux.Devices, func(x specs.LinuxDevice) bool { return x.Path == path })
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{
				Path: path, Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid,
			})
			r := resources(s)
			r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: perms})
		}
		return nil
	}
}

// SecurityOpt is the option of one of Docker's --security-opt values:
// seccomp=unconfined, seccomp=PROFILE.json, no-new-privileges[=true|false]
// and systempaths=unconfined (no masked or read-only /proc and /sys paths).
// keel has no AppArmor or SELinux support: apparmor= and label= are
// refused, as is anything else.
func SecurityOpt(opt string) (SpecOpt, error) {
	// Docker took "key:value" once; it still does.
	k, v, ok := strings.Cut(opt, "=")
	if !ok {
		k, v, ok = strings.Cut(opt, ":")
	}
	bad := func(why string) (SpecOpt, error) {
		return nil, fmt.Errorf("security-opt %q: %s: %w", opt, why, errdefs.ErrInvalidArgument)
	}
	switch k {
	case "seccomp":
		switch {
		case !ok || v == "":
			return bad("want seccomp=unconfined or seccomp=PROFILE.json")
		case v == "unconfined":
			return WithSeccompUnconfined, nil
		case v == "builtin" || v == "default":
			return WithDefaultSeccomp, nil
		}
		return WithSeccompProfileFile(v), nil
	case "no-new-privileges":
		if !ok {
			return WithNoNewPrivileges(true), nil
		}
		on, err := strconv.ParseBool(v)
		if err != nil {
			return bad("want true or false")
		}
		return WithNoNewPrivileges(on), nil
	case "systempaths":
		if v != "unconfined" {
			return bad("want systempaths=unconfined")
		}
		return func(_ context.Context, s *Spec) error {
			s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
			return nil
		}, nil
	case "apparmor", "label":
		return bad("keel has no AppArmor or SELinux support")
	case "":
		return bad("empty")
	}
	return bad("unknown option (keel knows seccomp=, no-new-privileges and systempaths=unconfined)")
}
