package cri

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Labels of the keel container that is a pod sandbox: they are the whole
// record of the pod (keel-cri keeps nothing else), and the CRI's own
// labels and annotations travel as labels under a prefix of their own.
const (
	LabelKind           = "io.keel.cri/kind" // "sandbox"
	KindSandbox         = "sandbox"
	LabelPodName        = "io.keel.cri/pod.name"
	LabelPodNamespace   = "io.keel.cri/pod.namespace"
	LabelPodUID         = "io.keel.cri/pod.uid"
	LabelPodAttempt     = "io.keel.cri/pod.attempt"
	LabelRuntimeHandler = "io.keel.cri/runtime-handler"
	LabelLogDirectory   = "io.keel.cri/log-directory"
	// LabelSandboxID marks a keel container as one of a pod's (set on
	// the pod's containers, not on the sandbox itself).
	LabelSandboxID = "io.keel.cri/sandbox-id"
	// PrefixLabel and PrefixAnnotation hold the CRI's labels and
	// annotations.
	PrefixLabel      = "io.keel.cri.label/"
	PrefixAnnotation = "io.keel.cri.annotation/"
)

// sandboxFilter selects the pod sandboxes among keel containers.
var sandboxFilter = `labels."` + LabelKind + `"==` + KindSandbox

// sandboxLabels are the keel labels that record a pod sandbox.
func sandboxLabels(cfg *runtimeapi.PodSandboxConfig, handler string) map[string]string {
	md := cfg.GetMetadata()
	l := map[string]string{
		LabelKind:         KindSandbox,
		LabelPodName:      md.GetName(),
		LabelPodNamespace: md.GetNamespace(),
		LabelPodUID:       md.GetUid(),
		LabelPodAttempt:   strconv.FormatUint(uint64(md.GetAttempt()), 10),
	}
	if handler != "" {
		l[LabelRuntimeHandler] = handler
	}
	if d := cfg.GetLogDirectory(); d != "" {
		l[LabelLogDirectory] = d
	}
	addCRILabels(l, cfg.GetLabels(), cfg.GetAnnotations())
	return l
}

// addCRILabels keeps the CRI's labels and annotations in keel labels l,
// under their prefixes.
func addCRILabels(l, labels, annotations map[string]string) {
	for k, v := range labels {
		l[PrefixLabel+k] = v
	}
	for k, v := range annotations {
		l[PrefixAnnotation+k] = v
	}
}

// matchLabels: labels hold every key and value of selector.
func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// prefixed is the labels under prefix, without it.
func prefixed(labels map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// validateSandboxConfig refuses what no pod can be made from.
func validateSandboxConfig(cfg *runtimeapi.PodSandboxConfig) error {
	md := cfg.GetMetadata()
	if md.GetName() == "" || md.GetNamespace() == "" || md.GetUid() == "" {
		return fmt.Errorf("pod sandbox metadata needs name, namespace and uid (got %v): %w", md, errdefs.ErrInvalidArgument)
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if ns.GetPid() == runtimeapi.NamespaceMode_TARGET {
		return fmt.Errorf("pod sandbox: PID namespace mode TARGET is for containers: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// sandboxSpecOpts make the pause process's spec from the pod's config:
// its namespaces (a NODE mode shares the host's; the host's network
// brings the host's UTS, as containerd does), hostname, cgroup parent
// (cgroupfs: <parent>/<id>), sysctls and security context.
func sandboxSpecOpts(id string, cfg *runtimeapi.PodSandboxConfig) ([]oci.SpecOpt, error) {
	lx := cfg.GetLinux()
	sc := lx.GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	md := cfg.GetMetadata()
	opts := []oci.SpecOpt{
		oci.WithProcessArgs(PauseBinary),
		oci.WithAnnotations(map[string]string{
			"io.kubernetes.cri.container-type":    "sandbox",
			"io.kubernetes.cri.sandbox-id":        id,
			"io.kubernetes.cri.sandbox-name":      md.GetName(),
			"io.kubernetes.cri.sandbox-namespace": md.GetNamespace(),
			"io.kubernetes.cri.sandbox-uid":       md.GetUid(),
		}),
	}
	if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE {
		opts = append(opts, oci.WithHostNamespace(specs.UTSNamespace))
	} else if cfg.GetHostname() != "" {
		opts = append(opts, oci.WithHostname(cfg.GetHostname()))
	}
	if ns.GetIpc() == runtimeapi.NamespaceMode_NODE {
		opts = append(opts, oci.WithHostNamespace(specs.IPCNamespace))
	}
	if ns.GetPid() == runtimeapi.NamespaceMode_NODE {
		opts = append(opts, oci.WithHostNamespace(specs.PIDNamespace))
	}
	if parent := lx.GetCgroupParent(); parent != "" {
		if !filepath.IsAbs(parent) {
			return nil, fmt.Errorf("cgroup parent %q: keel-cri's cgroup driver is cgroupfs, which takes an absolute path: %w", parent, errdefs.ErrInvalidArgument)
		}
		opts = append(opts, withCgroupsPath(filepath.Join(parent, id)))
	}
	if len(lx.GetSysctls()) > 0 {
		opts = append(opts, withSysctls(lx.GetSysctls()))
	}
	if sc.GetPrivileged() {
		opts = append(opts, oci.WithPrivileged)
	}
	if u := sc.GetRunAsUser(); u != nil {
		user := strconv.FormatInt(u.GetValue(), 10)
		if g := sc.GetRunAsGroup(); g != nil {
			user += ":" + strconv.FormatInt(g.GetValue(), 10)
		}
		opts = append(opts, oci.WithUser(user))
	} else if sc.GetRunAsGroup() != nil {
		return nil, fmt.Errorf("run_as_group needs run_as_user: %w", errdefs.ErrInvalidArgument)
	}
	if len(sc.GetSupplementalGroups()) > 0 {
		opts = append(opts, withSupplementalGroups(sc.GetSupplementalGroups()))
	}
	if !sc.GetPrivileged() {
		seccomp, err := seccompOpt(sc.GetSeccomp())
		if err != nil {
			return nil, err
		}
		opts = append(opts, seccomp)
	}
	return opts, nil
}

// seccompOpt is the profile the CRI asks for: RuntimeDefault is keel's
// default (Docker's), Localhost a JSON profile file on the host; none
// means unconfined, as the kubelet and containerd take it. (The
// deprecated seccomp_profile_path, which kubelets since 1.25 no longer
// send, is not read.)
func seccompOpt(p *runtimeapi.SecurityProfile) (oci.SpecOpt, error) {
	if p == nil {
		return oci.WithSeccompUnconfined, nil
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		return oci.WithDefaultSeccomp, nil
	case runtimeapi.SecurityProfile_Localhost:
		if !filepath.IsAbs(p.GetLocalhostRef()) {
			return nil, fmt.Errorf("seccomp localhost profile %q: not an absolute path: %w", p.GetLocalhostRef(), errdefs.ErrInvalidArgument)
		}
		return oci.WithSeccompProfileFile(p.GetLocalhostRef()), nil
	}
	return oci.WithSeccompUnconfined, nil
}

func withCgroupsPath(path string) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		s.Linux.CgroupsPath = path
		return nil
	}
}

func withSysctls(sysctls map[string]string) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		maps.Copy(s.Linux.Sysctl, sysctls)
		return nil
	}
}

func withSupplementalGroups(gids []int64) oci.SpecOpt {
	return func(_ context.Context, s *oci.Spec) error {
		for _, g := range gids {
			s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, uint32(g))
		}
		return nil
	}
}

// sandboxNetworkOpts attach the pod: the host's network for NODE, else
// the CNI network named (keeld's default when "") with the pod's port
// mappings (those with a host port; SCTP is refused) and DNS.
func sandboxNetworkOpts(cfg *runtimeapi.PodSandboxConfig, network string) ([]client.NewContainerOpt, error) {
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return []client.NewContainerOpt{client.WithHostNetwork()}, nil
	}
	var names []string
	if network != "" {
		names = append(names, network)
	}
	opts := []client.NewContainerOpt{client.WithNetwork(names...)}
	var ports []client.PortMapping
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue // nothing published on the host (as containerd skips it)
		}
		p := client.PortMapping{HostIP: pm.GetHostIp(), HostPort: uint16(pm.GetHostPort()), ContainerPort: uint16(pm.GetContainerPort())}
		if pm.GetHostPort() > 65535 || pm.GetContainerPort() <= 0 || pm.GetContainerPort() > 65535 {
			return nil, fmt.Errorf("port mapping %v: ports must be 1-65535: %w", pm, errdefs.ErrInvalidArgument)
		}
		switch pm.GetProtocol() {
		case runtimeapi.Protocol_TCP:
			p.Protocol = "tcp"
		case runtimeapi.Protocol_UDP:
			p.Protocol = "udp"
		default:
			return nil, fmt.Errorf("port mapping %v: protocol %v is not supported (tcp, udp): %w", pm, pm.GetProtocol(), errdefs.ErrNotImplemented)
		}
		ports = append(ports, p)
	}
	if len(ports) > 0 {
		opts = append(opts, client.WithPortMap(ports...))
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		opts = append(opts, client.WithDNS(client.DNSConfig{Servers: dns.GetServers(), Search: dns.GetSearches(), Options: dns.GetOptions()}))
	}
	return opts, nil
}
