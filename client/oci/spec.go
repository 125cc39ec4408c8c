// Package oci builds OCI runtime specs for containers, in containerd's
// With* style: sdk/runtime's safe DefaultSpec, changed by SpecOpts.
//
//	spec, err := oci.GenerateSpec(ctx, oci.WithImageConfig(img), oci.WithProcessArgs("sh"), oci.WithMemoryLimit(64<<20))
package oci

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Spec is the OCI runtime spec.
type Spec = specs.Spec

// SpecOpt changes a spec.
type SpecOpt func(ctx context.Context, s *Spec) error

// GenerateSpec is sdk/runtime's DefaultSpec with opts applied in order,
// then the choices that depend on the final spec: WithInit's wrapping of
// the command, and the seccomp profile — Docker's default unless an option
// chose another or none (see WithDefaultSeccomp).
func GenerateSpec(ctx context.Context, opts ...SpecOpt) (*Spec, error) {
	s := runtime.DefaultSpec()
	st := &finalState{seccomp: defaultSeccomp}
	ctx = context.WithValue(ctx, finalKey{}, st)
	for _, o := range opts {
		if err := o(ctx, s); err != nil {
			return nil, err
		}
	}
	if err := st.finish(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Image is what WithImageConfig reads: the image's config, for the host's
// platform (client.Image through client.ImageConfig implements it).
type Image interface {
	Config(ctx context.Context) (ocispec.Image, error)
}

// WithImageConfig takes env, entrypoint + cmd, working dir and user (with
// its groups, see WithUserGroups) from the image's config.
func WithImageConfig(img Image) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		cfg, err := img.Config(ctx)
		if err != nil {
			return err
		}
		c := cfg.Config
		s.Process.Env = mergeEnv(s.Process.Env, c.Env)
		if args := append(slices.Clone(c.Entrypoint), c.Cmd...); len(args) > 0 {
			s.Process.Args = args
		}
		if c.WorkingDir != "" {
			s.Process.Cwd = c.WorkingDir
		}
		if c.User != "" {
			return WithUserGroups(c.User)(ctx, s)
		}
		// root's supplementary groups, as containerd gives them.
		return WithAdditionalGIDs("root")(ctx, s)
	}
}

// WithProcessArgs sets the command.
func WithProcessArgs(args ...string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		s.Process.Args = slices.Clone(args)
		return nil
	}
}

// WithEnv sets variables "K=V", replacing those of the same name.
func WithEnv(env ...string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		for _, kv := range env {
			if !strings.Contains(kv, "=") {
				return fmt.Errorf("env %q: want K=V: %w", kv, errdefs.ErrInvalidArgument)
			}
		}
		s.Process.Env = mergeEnv(s.Process.Env, env)
		return nil
	}
}

func mergeEnv(base, add []string) []string {
	out := slices.Clone(base)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		i := slices.IndexFunc(out, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		if i >= 0 {
			out[i] = kv
		} else {
			out = append(out, kv)
		}
	}
	return out
}

// WithCwd sets the working directory.
func WithCwd(dir string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if !strings.HasPrefix(dir, "/") {
			return fmt.Errorf("cwd %q: not absolute: %w", dir, errdefs.ErrInvalidArgument)
		}
		s.Process.Cwd = dir
		return nil
	}
}

// WithTTY gives the process a terminal (and TERM=xterm).
func WithTTY(_ context.Context, s *Spec) error {
	s.Process.Terminal = true
	s.Process.Env = mergeEnv(s.Process.Env, []string{"TERM=xterm"})
	return nil
}

// WithHostname sets the hostname.
func WithHostname(name string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		s.Hostname = name
		return nil
	}
}

// WithMounts adds mounts, after the defaults.
func WithMounts(mounts ...specs.Mount) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		for _, m := range mounts {
			if !strings.HasPrefix(m.Destination, "/") {
				return fmt.Errorf("mount destination %q: not absolute: %w", m.Destination, errdefs.ErrInvalidArgument)
			}
		}
		s.Mounts = append(s.Mounts, mounts...)
		return nil
	}
}

func resources(s *Spec) *specs.LinuxResources {
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	return s.Linux.Resources
}

// WithMemoryLimit limits memory (and memory+swap to the same) to bytes.
func WithMemoryLimit(bytes int64) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if bytes <= 0 {
			return fmt.Errorf("memory limit %d: must be positive: %w", bytes, errdefs.ErrInvalidArgument)
		}
		r := resources(s)
		r.Memory = &specs.LinuxMemory{Limit: &bytes, Swap: &bytes}
		return nil
	}
}

// cpuPeriod is the CFS period WithCPUs sets a quota against.
const cpuPeriod = 100000

// WithCPUs limits CPU time to cpus CPUs' worth (e.g. 0.5).
func WithCPUs(cpus float64) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if cpus <= 0 || math.IsInf(cpus, 0) || math.IsNaN(cpus) {
			return fmt.Errorf("cpus %v: must be positive: %w", cpus, errdefs.ErrInvalidArgument)
		}
		period := uint64(cpuPeriod)
		quota := int64(cpus * cpuPeriod)
		r := resources(s)
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		r.CPU.Period, r.CPU.Quota = &period, &quota
		return nil
	}
}

// WithPidsLimit limits the number of processes.
func WithPidsLimit(n int64) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if n <= 0 {
			return fmt.Errorf("pids limit %d: must be positive: %w", n, errdefs.ErrInvalidArgument)
		}
		resources(s).Pids = &specs.LinuxPids{Limit: &n}
		return nil
	}
}

// WithHostNamespace shares the host's namespace of type ns (e.g.
// specs.NetworkNamespace) instead of a new one. With the host's network,
// the hostname is the host's (as containerd and nerdctl set it; with the
// host's UTS namespace too, none is set), and
// keeld bind-mounts copies of the host's /etc/resolv.conf and /etc/hosts
// and an /etc/hostname into the container at task create.
func WithHostNamespace(ns specs.LinuxNamespaceType) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == ns })
		ownUTS := slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UTSNamespace })
		if !ownUTS {
			// The host's UTS namespace: its name is the host's, and runc
			// refuses to set one.
			s.Hostname = ""
		}
		if ns == specs.NetworkNamespace {
			if name, err := os.Hostname(); err == nil && ownUTS {
				s.Hostname = name
			}
			// The host's /sys belongs to the host's network namespace.
			for i, m := range s.Mounts {
				if m.Destination == "/sys" {
					s.Mounts[i].Type, s.Mounts[i].Source = "bind", "/sys"
					s.Mounts[i].Options = []string{"rbind", "nosuid", "noexec", "nodev", "ro"}
				}
			}
		}
		return nil
	}
}

// WithReadonlyRootfs mounts the rootfs read-only.
func WithReadonlyRootfs(_ context.Context, s *Spec) error {
	s.Root.Readonly = true
	return nil
}

// WithPrivileged gives every capability, every device, and drops the
// masked and read-only paths and the seccomp filter: the host's power, use
// with care.
func WithPrivileged(ctx context.Context, s *Spec) error {
	if err := WithSeccompUnconfined(ctx, s); err != nil {
		return err
	}
	caps := hostCapabilities()
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: slices.Clone(caps), Permitted: slices.Clone(caps)}
	s.Process.NoNewPrivileges = false
	s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	resources(s).Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	for i, m := range s.Mounts {
		if m.Destination == "/sys" {
			s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
		}
	}
	return nil
}

// hostCapabilities are the capabilities of allCapabilities in this
// process's bounding set: all a container here can have (a sandbox's root
// may lack some, and runc fails to apply one it cannot have), as Docker's
// --privileged gives them. keeld and the runtime are on the caller's host.
func hostCapabilities() []string {
	var caps []string
	for i, c := range allCapabilities() {
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(i), 0, 0, 0); err == nil && in == 1 {
			caps = append(caps, c)
		}
	}
	return caps
}

// allCapabilities are Linux's capabilities, by number (CAP_CHOWN is 0).
func allCapabilities() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
		"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
		"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
		"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
		"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
		"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
		"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
		"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
		"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
	}
}

// WithAnnotations adds annotations.
func WithAnnotations(a map[string]string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for k, v := range a {
			s.Annotations[k] = v
		}
		return nil
	}
}
