package cri

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// sandboxInfo is the keel container record RunPodSandbox would make from
// cfg (without its image and snapshot, which need keeld).
func sandboxInfo(t *testing.T, id string, cfg *runtimeapi.PodSandboxConfig) (client.ContainerInfo, error) {
	t.Helper()
	if err := validateSandboxConfig(cfg); err != nil {
		return client.ContainerInfo{}, err
	}
	specOpts, err := sandboxSpecOpts(id, cfg)
	if err != nil {
		return client.ContainerInfo{}, err
	}
	netOpts, err := sandboxNetworkOpts(cfg, "")
	if err != nil {
		return client.ContainerInfo{}, err
	}
	info := client.ContainerInfo{ID: id}
	opts := append([]client.NewContainerOpt{client.WithNewSpec(specOpts...), client.WithContainerLabels(sandboxLabels(cfg, "runc"))}, netOpts...)
	for _, o := range opts {
		if err := o(context.Background(), nil, &info); err != nil {
			return client.ContainerInfo{}, err
		}
	}
	return info, nil
}

func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	return slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
}

func TestSandboxOptions(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	base := func(edit func(c *runtimeapi.PodSandboxConfig)) *runtimeapi.PodSandboxConfig {
		c := &runtimeapi.PodSandboxConfig{
			Metadata:    &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "prod", Uid: "u1", Attempt: 2},
			Hostname:    "web-0",
			Labels:      map[string]string{"app": "web", "k8s.io/x": "y"},
			Annotations: map[string]string{"note": "hi"},
			Linux:       &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	nsOpts := func(c *runtimeapi.PodSandboxConfig) *runtimeapi.NamespaceOption {
		return c.Linux.SecurityContext.NamespaceOptions
	}
	for _, tc := range []struct {
		name  string
		cfg   *runtimeapi.PodSandboxConfig
		check func(t *testing.T, info client.ContainerInfo)
		isErr func(error) bool
	}{
		{"defaults", base(nil), func(t *testing.T, info client.ContainerInfo) {
			s := info.Spec
			if !slices.Equal(s.Process.Args, []string{"/pause"}) || s.Hostname != "web-0" {
				t.Errorf("args %v hostname %q", s.Process.Args, s.Hostname)
			}
			for _, ns := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace} {
				if !hasNamespace(s, ns) {
					t.Errorf("no %s namespace of its own", ns)
				}
			}
			if info.Network.Mode != client.NetworkCNI || len(info.Network.Networks) != 0 {
				t.Errorf("network %+v, want keeld's default CNI network", info.Network)
			}
			if s.Linux.Seccomp != nil {
				t.Errorf("seccomp %v, want none (unconfined, as the kubelet means no profile)", s.Linux.Seccomp)
			}
			want := map[string]string{LabelKind: KindSandbox, LabelPodName: "web", LabelPodNamespace: "prod", LabelPodUID: "u1",
				LabelPodAttempt: "2", LabelRuntimeHandler: "runc", PrefixLabel + "app": "web", PrefixLabel + "k8s.io/x": "y",
				PrefixAnnotation + "note": "hi"}
			for k, v := range want {
				if info.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, info.Labels[k], v)
				}
			}
			if s.Annotations["io.kubernetes.cri.sandbox-id"] != "sb1" || s.Annotations["io.kubernetes.cri.container-type"] != "sandbox" {
				t.Errorf("annotations %v", s.Annotations)
			}
		}, nil},
		{"host network", base(func(c *runtimeapi.PodSandboxConfig) { nsOpts(c).Network = runtimeapi.NamespaceMode_NODE }), func(t *testing.T, info client.ContainerInfo) {
			if info.Network.Mode != client.NetworkHost || hasNamespace(info.Spec, specs.UTSNamespace) {
				t.Errorf("network %+v, uts namespace %v: want the host's", info.Network, hasNamespace(info.Spec, specs.UTSNamespace))
			}
			if !hasNamespace(info.Spec, specs.PIDNamespace) {
				t.Error("host network took the host's PID namespace")
			}
		}, nil},
		{"host pid and ipc", base(func(c *runtimeapi.PodSandboxConfig) {
			nsOpts(c).Pid, nsOpts(c).Ipc = runtimeapi.NamespaceMode_NODE, runtimeapi.NamespaceMode_NODE
		}), func(t *testing.T, info client.ContainerInfo) {
			if hasNamespace(info.Spec, specs.PIDNamespace) || hasNamespace(info.Spec, specs.IPCNamespace) || !hasNamespace(info.Spec, specs.NetworkNamespace) {
				t.Errorf("namespaces %v", info.Spec.Linux.Namespaces)
			}
		}, nil},
		{"ports and dns", base(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{
				{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"},
				{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353},
				{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 9090}, // no host port: not published
			}
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.local"}, Options: []string{"ndots:5"}}
		}), func(t *testing.T, info client.ContainerInfo) {
			want := []client.PortMapping{{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 5353, ContainerPort: 53, Protocol: "udp"}}
			if !slices.Equal(info.Network.Ports, want) {
				t.Errorf("ports %v, want %v", info.Network.Ports, want)
			}
			d := info.Network.DNS
			if !slices.Equal(d.Servers, []string{"10.0.0.10"}) || !slices.Equal(d.Search, []string{"svc.local"}) || !slices.Equal(d.Options, []string{"ndots:5"}) {
				t.Errorf("dns %+v", d)
			}
		}, nil},
		{"sctp", base(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_SCTP, ContainerPort: 80, HostPort: 80}}
		}), nil, errdefs.IsNotImplemented},
		{"port out of range", base(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 70000}}
		}), nil, errdefs.IsInvalidArgument},
		{"cgroup parent and sysctls", base(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.CgroupParent = "/kubepods/besteffort/podu1"
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
		}), func(t *testing.T, info client.ContainerInfo) {
			if info.Spec.Linux.CgroupsPath != "/kubepods/besteffort/podu1/sb1" || info.Spec.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] != "0" {
				t.Errorf("cgroups path %q sysctls %v", info.Spec.Linux.CgroupsPath, info.Spec.Linux.Sysctl)
			}
		}, nil},
		{"systemd cgroup parent", base(func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "kubepods-besteffort.slice" }), nil, errdefs.IsInvalidArgument},
		{"run as", base(func(c *runtimeapi.PodSandboxConfig) {
			sc := c.Linux.SecurityContext
			sc.RunAsUser, sc.RunAsGroup, sc.SupplementalGroups = &runtimeapi.Int64Value{Value: 1000}, &runtimeapi.Int64Value{Value: 2000}, []int64{3000}
		}), func(t *testing.T, info client.ContainerInfo) {
			u := info.Spec.Process.User
			if u.UID != 1000 || u.GID != 2000 || !slices.Contains(u.AdditionalGids, 3000) {
				t.Errorf("user %+v", u)
			}
		}, nil},
		{"group without user", base(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 2000}
		}), nil, errdefs.IsInvalidArgument},
		{"privileged", base(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.Privileged = true }), func(t *testing.T, info client.ContainerInfo) {
			if info.Spec.Linux.MaskedPaths != nil || info.Spec.Linux.Seccomp != nil || !slices.Contains(info.Spec.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
				t.Errorf("privileged spec: masked %v seccomp %v caps %v", info.Spec.Linux.MaskedPaths, info.Spec.Linux.Seccomp, info.Spec.Process.Capabilities.Bounding)
			}
		}, nil},
		{"seccomp runtime default", base(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		}), func(t *testing.T, info client.ContainerInfo) {
			if info.Spec.Linux.Seccomp == nil || info.Spec.Linux.Seccomp.DefaultAction != specs.ActErrno {
				t.Errorf("seccomp %v, want keel's default", info.Spec.Linux.Seccomp)
			}
		}, nil},
		{"seccomp localhost", base(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: profile}
		}), func(t *testing.T, info client.ContainerInfo) {
			if info.Spec.Linux.Seccomp == nil || info.Spec.Linux.Seccomp.DefaultAction != specs.ActAllow {
				t.Errorf("seccomp %v, want the profile file's", info.Spec.Linux.Seccomp)
			}
		}, nil},
		{"no metadata", base(func(c *runtimeapi.PodSandboxConfig) { c.Metadata = nil }), nil, errdefs.IsInvalidArgument},
		{"pid target", base(func(c *runtimeapi.PodSandboxConfig) { nsOpts(c).Pid = runtimeapi.NamespaceMode_TARGET }), nil, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := sandboxInfo(t, "sb1", tc.cfg)
			if tc.isErr != nil {
				if !tc.isErr(err) {
					t.Fatalf("error %v, want another class", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, info)
		})
	}
}

func TestMatchSandbox(t *testing.T) {
	sb := &runtimeapi.PodSandbox{Id: "abcdef", State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: map[string]string{"app": "web", "tier": "fe"}}
	ready := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	notReady := &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}
	for _, tc := range []struct {
		name string
		f    *runtimeapi.PodSandboxFilter
		want bool
	}{
		{"nil", nil, true},
		{"id", &runtimeapi.PodSandboxFilter{Id: "abcdef"}, true},
		{"id prefix", &runtimeapi.PodSandboxFilter{Id: "abc"}, true},
		{"other id", &runtimeapi.PodSandboxFilter{Id: "abd"}, false},
		{"state", &runtimeapi.PodSandboxFilter{State: ready}, true},
		{"other state", &runtimeapi.PodSandboxFilter{State: notReady}, false},
		{"labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "web", "tier": "fe"}}, true},
		{"label value", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "db"}}, false},
		{"label absent", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"zone": ""}}, false},
		{"all", &runtimeapi.PodSandboxFilter{Id: "ab", State: ready, LabelSelector: map[string]string{"app": "web"}}, true},
	} {
		if got := matchSandbox(sb, tc.f); got != tc.want {
			t.Errorf("%s: match %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPauseImageStable: the same executable makes the same image, one
// layer holding /pause.
func TestPauseImageStable(t *testing.T) {
	a, err := buildPauseImage([]byte("binary"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildPauseImage([]byte("binary"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := buildPauseImage([]byte("other"))
	if err != nil {
		t.Fatal(err)
	}
	if a.desc.Digest != b.desc.Digest || a.desc.Digest == c.desc.Digest {
		t.Errorf("digests %s %s %s: want the same for the same bytes only", a.desc.Digest, b.desc.Digest, c.desc.Digest)
	}
}
