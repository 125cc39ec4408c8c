package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Labels of a pod's container (besides LabelSandboxID and the prefixed
// CRI labels and annotations): with the container's keel record they are
// all keel-cri knows of it.
const (
	KindContainer         = "container"
	LabelContainerName    = "io.keel.cri/container.name"
	LabelContainerAttempt = "io.keel.cri/container.attempt"
	LabelImageRef         = "io.keel.cri/image" // the image as the kubelet named it
	LabelLogPath          = "io.keel.cri/log-path"
	LabelStartedAt        = "io.keel.cri/started-at" // unix nanoseconds
	LabelMounts           = "io.keel.cri/mounts"     // the CRI mounts, as JSON
	LabelStdin            = "io.keel.cri/stdin"      // "true": keeld holds a stdin for attach
	LabelStdinOnce        = "io.keel.cri/stdin-once" // "true": the first attach's end closes it
	// LabelMemoryCgroup is the directory of the memory cgroup the
	// container's task was started in, where its OOM kills are counted.
	LabelMemoryCgroup = "io.keel.cri/memory-cgroup"

	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	annotationContainerName = "io.kubernetes.cri.container-name"
	annotationImageName     = "io.kubernetes.cri.image-name"
	annotationSandboxName   = "io.kubernetes.cri.sandbox-name"
	annotationSandboxNS     = "io.kubernetes.cri.sandbox-namespace"
	annotationSandboxUID    = "io.kubernetes.cri.sandbox-uid"
	containerTypeContainer  = "container"
)

// containerLabels are the keel labels that record a pod's container.
func containerLabels(sandboxID, imageRef, logPath string, cfg *runtimeapi.ContainerConfig) map[string]string {
	md := cfg.GetMetadata()
	l := map[string]string{
		LabelKind:             KindContainer,
		LabelSandboxID:        sandboxID,
		LabelContainerName:    md.GetName(),
		LabelContainerAttempt: strconv.FormatUint(uint64(md.GetAttempt()), 10),
		LabelImageRef:         imageRef,
	}
	if logPath != "" {
		l[LabelLogPath] = logPath
	}
	addCRILabels(l, cfg.GetLabels(), cfg.GetAnnotations())
	return l
}

// processArgs merges the container's command and args with the image's
// entrypoint and cmd as the kubelet expects (containerd's rule): a
// command replaces the entrypoint and, with no args, the cmd too; args
// alone replace the cmd.
func processArgs(command, args, entrypoint, cmd []string) ([]string, error) {
	if len(command) == 0 {
		command = entrypoint
		if len(args) == 0 {
			args = cmd
		}
	}
	all := append(slices.Clone(command), args...)
	if len(all) == 0 {
		return nil, fmt.Errorf("no command: neither the container nor its image gives one: %w", errdefs.ErrInvalidArgument)
	}
	return all, nil
}

// podNamespaces are the spec options that put the container into its
// pod's namespaces, those of the pause task pid: network, IPC and UTS
// always (the host's when the pod has them), PID as the container's
// config says (the pod's, its own, the host's, or a target container's,
// whose task is targetPid).
func podNamespaces(sbSpec *specs.Spec, pid uint32, mode runtimeapi.NamespaceMode, targetPid uint32) []oci.SpecOpt {
	ns := func(t specs.LinuxNamespaceType, file string) oci.SpecOpt {
		if namespaceMode(sbSpec, t) == runtimeapi.NamespaceMode_NODE {
			return oci.WithHostNamespace(t)
		}
		return oci.WithNamespacePath(t, fmt.Sprintf("/proc/%d/ns/%s", pid, file))
	}
	opts := []oci.SpecOpt{ns(specs.IPCNamespace, "ipc"), ns(specs.UTSNamespace, "uts")}
	switch mode {
	case runtimeapi.NamespaceMode_POD:
		opts = append(opts, ns(specs.PIDNamespace, "pid"))
	case runtimeapi.NamespaceMode_NODE:
		opts = append(opts, oci.WithHostNamespace(specs.PIDNamespace))
	case runtimeapi.NamespaceMode_TARGET:
		opts = append(opts, oci.WithNamespacePath(specs.PIDNamespace, fmt.Sprintf("/proc/%d/ns/pid", targetPid)))
	}
	return opts
}

// withCRIMounts binds the config's host paths, with their propagation;
// a missing host path is made as a directory, as the kubelet expects (the
// caller named it).
func withCRIMounts(mounts []*runtimeapi.Mount) (oci.SpecOpt, error) {
	var out []specs.Mount
	for _, m := range mounts {
		// An image volume has no host path: said before the path check,
		// so the caller learns the feature is missing, not that its
		// mount is wrong.
		if m.GetImage() != nil && m.GetImage().GetImage() != "" {
			return nil, fmt.Errorf("mount %s: image volumes (a mount of image %s) are not supported: %w", m.GetContainerPath(), m.GetImage().GetImage(), errdefs.ErrNotImplemented)
		}
		if !filepath.IsAbs(m.GetContainerPath()) || !filepath.IsAbs(m.GetHostPath()) {
			return nil, fmt.Errorf("mount %s:%s: paths must be absolute: %w", m.GetHostPath(), m.GetContainerPath(), errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(m.GetHostPath()); os.IsNotExist(err) {
			if err := os.MkdirAll(m.GetHostPath(), 0o755); err != nil {
				return nil, fmt.Errorf("mount %s: %w", m.GetHostPath(), err)
			}
		} else if err != nil {
			return nil, fmt.Errorf("mount %s: %w", m.GetHostPath(), err)
		}
		opts := []string{"rbind"}
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			opts = append(opts, "rprivate")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
		}
		if m.GetReadonly() {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		if m.GetRecursiveReadOnly() {
			opts = append(opts, "rro") // checked: read-only, private, a runtime that can
		}
		out = append(out, specs.Mount{Destination: m.GetContainerPath(), Type: "bind", Source: m.GetHostPath(), Options: opts})
	}
	return func(ctx context.Context, s *oci.Spec) error {
		// A CRI mount replaces the spec's own at the same place.
		s.Mounts = slices.DeleteFunc(s.Mounts, func(sm specs.Mount) bool {
			return slices.ContainsFunc(out, func(m specs.Mount) bool { return filepath.Clean(m.Destination) == filepath.Clean(sm.Destination) })
		})
		s.Mounts = append(s.Mounts, out...)
		// A bidirectional mount needs a shared root, a host-to-container
		// one at least a slave root (runc's rootfs propagation).
		for _, m := range out {
			switch {
			case slices.Contains(m.Options, "rshared"):
				s.Linux.RootfsPropagation = "rshared"
			case slices.Contains(m.Options, "rslave") && s.Linux.RootfsPropagation != "rshared":
				s.Linux.RootfsPropagation = "rslave"
			}
		}
		return nil
	}, nil
}

// criDevices are the config's devices as keel's.
func criDevices(devs []*runtimeapi.Device) []oci.Device {
	out := make([]oci.Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, oci.Device{Host: d.GetHostPath(), Container: d.GetContainerPath(), Permissions: d.GetPermissions()})
	}
	return out
}

// linuxResources are the CRI's resources as the OCI spec's; nil for none.
func linuxResources(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := &specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}}
	if v := r.GetCpuShares(); v > 0 {
		shares := uint64(v)
		out.CPU.Shares = &shares
	}
	if v := r.GetCpuQuota(); v != 0 {
		out.CPU.Quota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		period := uint64(v)
		out.CPU.Period = &period
	}
	out.CPU.Cpus, out.CPU.Mems = r.GetCpusetCpus(), r.GetCpusetMems()
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		out.Memory.Limit = &v
	}
	if v := r.GetMemorySwapLimitInBytes(); v > 0 {
		out.Memory.Swap = &v
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if len(r.GetUnified()) > 0 {
		out.Unified = r.GetUnified()
	}
	return out
}

// withResources sets the container's resources (keeping its device
// rules) and its OOM score adjustment.
func withResources(r *runtimeapi.LinuxContainerResources) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		res := linuxResources(r)
		if res == nil {
			return nil
		}
		if s.Linux.Resources != nil {
			res.Devices = s.Linux.Resources.Devices
			res.Pids = s.Linux.Resources.Pids
		}
		s.Linux.Resources = res
		if adj := int(r.GetOomScoreAdj()); adj != 0 {
			s.Process.OOMScoreAdj = &adj
		}
		return nil
	}
}

// withPrimaryGroupOnly drops the groups the image's /etc/group gave the
// user (SupplementalGroupsPolicy Strict): the process keeps its primary
// group, and gets only the supplemental groups the config names.
func withPrimaryGroupOnly(_ context.Context, s *oci.Spec) error {
	s.Process.User.AdditionalGids = []uint32{s.Process.User.GID}
	return nil
}

// securityOpts are the container's security context as spec options:
// privileged, capabilities, user and groups, read-only rootfs, seccomp,
// no_new_privs, masked and read-only paths.
func securityOpts(sc *runtimeapi.LinuxContainerSecurityContext) ([]oci.SpecOpt, error) {
	var opts []oci.SpecOpt
	if sc.GetPrivileged() {
		opts = append(opts, oci.WithPrivileged)
	} else if c := sc.GetCapabilities(); c != nil {
		add := append(slices.Clone(c.GetAddCapabilities()), c.GetAddAmbientCapabilities()...)
		opts = append(opts, oci.WithCapabilities(add, c.GetDropCapabilities()))
		if amb := c.GetAddAmbientCapabilities(); len(amb) > 0 {
			opts = append(opts, withAmbient(amb))
		}
	}
	switch {
	case sc.GetRunAsUser() != nil:
		user := strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
		if g := sc.GetRunAsGroup(); g != nil {
			user += ":" + strconv.FormatInt(g.GetValue(), 10)
		}
		opts = append(opts, oci.WithUser(user), oci.WithAdditionalGIDs(user))
	case sc.GetRunAsUsername() != "":
		user := sc.GetRunAsUsername()
		if g := sc.GetRunAsGroup(); g != nil {
			user += ":" + strconv.FormatInt(g.GetValue(), 10)
		}
		opts = append(opts, oci.WithUser(user), oci.WithAdditionalGIDs(user))
	case sc.GetRunAsGroup() != nil:
		return nil, fmt.Errorf("run_as_group needs run_as_user or run_as_username: %w", errdefs.ErrInvalidArgument)
	}
	if sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict {
		opts = append(opts, withPrimaryGroupOnly)
	}
	if len(sc.GetSupplementalGroups()) > 0 {
		opts = append(opts, withSupplementalGroups(sc.GetSupplementalGroups()))
	}
	if sc.GetReadonlyRootfs() {
		opts = append(opts, oci.WithReadonlyRootfs)
	}
	if !sc.GetPrivileged() {
		seccomp, err := seccompOpt(sc.GetSeccomp())
		if err != nil {
			return nil, err
		}
		opts = append(opts, seccomp, withPaths(sc.GetMaskedPaths(), sc.GetReadonlyPaths()))
	}
	opts = append(opts, oci.WithNoNewPrivileges(sc.GetNoNewPrivs()))
	return opts, nil
}

// withAmbient raises ambient capabilities (already in the other sets).
func withAmbient(names []string) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		for _, n := range names {
			c, err := oci.CapabilityName(n)
			if err != nil {
				return err
			}
			caps := s.Process.Capabilities
			caps.Ambient = append(caps.Ambient, c)
			if !slices.Contains(caps.Inheritable, c) {
				caps.Inheritable = append(caps.Inheritable, c)
			}
		}
		return nil
	}
}

// withPaths sets the masked and read-only paths the kubelet sends (it
// sends the defaults, or none for an unmasked /proc); nil keeps keel's.
func withPaths(masked, readonly []string) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		if masked != nil {
			s.Linux.MaskedPaths = masked
		}
		if readonly != nil {
			s.Linux.ReadonlyPaths = readonly
		}
		return nil
	}
}
