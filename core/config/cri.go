package config

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/hashicorp/hcl/v2"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/version"
)

// Defaults of the cri block.
const (
	// DefaultCRIPath is keel-cri's executable, found in plugin_dir.
	DefaultCRIPath = "keel-cri"
	// DefaultCRISocketName is the CRI socket's name under state.
	DefaultCRISocketName = "cri.sock"
	// DefaultCRINamespace is the keel namespace of the CRI's images, pods
	// and containers, as containerd's CRI names its own.
	DefaultCRINamespace = "k8s.io"
	// DefaultStreamAddress and DefaultStreamPort are where the streaming
	// server (exec, attach, port-forward) listens, as containerd's CRI
	// defaults: loopback, a free port.
	DefaultStreamAddress = "127.0.0.1"
	DefaultStreamPort    = "0"
)

// DefaultSandboxImage is the image of pods' sandbox (pause) process: the
// one keel-cri makes itself from keel-pause, named for keel's version (a
// tag keeps only the characters a tag may hold).
var DefaultSandboxImage = "localhost/keel/pause:" + versionTag(version.Version)

// versionTag is v as an image tag: [A-Za-z0-9_.-], at most 128, not
// starting with '.' or '-'.
func versionTag(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	t := strings.TrimLeft(string(b), ".-")
	if t == "" {
		return "dev"
	}
	return t[:min(len(t), 128)]
}

// CRI is the `cri {}` block: whether keeld runs keel-cri, the server of
// Kubernetes' CRI, and how. keel-cri is a client of keeld's API; keeld
// starts it, restarts it with backoff when it dies and stops it at exit.
type CRI struct {
	Enabled bool `json:"enabled"`
	// Address is the CRI's unix socket, absolute.
	Address string `json:"address"`
	// Path is keel-cri's executable, absolute.
	Path string `json:"path"`
	// Namespace is the keel namespace of the CRI's objects.
	Namespace string `json:"namespace"`
	// SandboxImage is the pods' pause image.
	SandboxImage string `json:"sandbox_image"`
	// StreamAddress is the IP the streaming server listens on; the
	// kubelet (or kube-apiserver, where it proxies) connects to it.
	StreamAddress string `json:"stream_address"`
	// StreamPort is its TCP port, "0" for a free one.
	StreamPort string `json:"stream_port"`
}

type criSchema struct {
	Enabled            *bool     `hcl:"enabled,optional"`
	Address            *string   `hcl:"address,optional"`
	AddressRange       hcl.Range `hcl:"address,attr_value_range"`
	Path               *string   `hcl:"path,optional"`
	PathRange          hcl.Range `hcl:"path,attr_value_range"`
	Namespace          *string   `hcl:"namespace,optional"`
	NamespaceRange     hcl.Range `hcl:"namespace,attr_value_range"`
	SandboxImage       *string   `hcl:"sandbox_image,optional"`
	SandboxImageRange  hcl.Range `hcl:"sandbox_image,attr_value_range"`
	StreamAddress      *string   `hcl:"stream_address,optional"`
	StreamAddressRange hcl.Range `hcl:"stream_address,attr_value_range"`
	StreamPort         *string   `hcl:"stream_port,optional"`
	StreamPortRange    hcl.Range `hcl:"stream_port,attr_value_range"`
}

// decodeCRI checks the cri block; c's state and plugin_dir are decoded
// already. Paths left out are filled in by CRIConfig.
func decodeCRI(s *criSchema, c *Config, fail failFunc) *CRI {
	out := &CRI{}
	if s.Enabled != nil {
		out.Enabled = *s.Enabled
	}
	if s.Address != nil {
		out.Address = *s.Address
		if !filepath.IsAbs(out.Address) {
			fail(s.AddressRange, "Invalid cri address", "cri address must be the absolute path of a unix socket, not %q.", out.Address)
		}
	}
	if s.Path != nil {
		switch {
		case *s.Path == "":
			fail(s.PathRange, "Invalid cri path", "path must name keel-cri's executable.")
		case filepath.IsAbs(*s.Path):
			out.Path = filepath.Clean(*s.Path)
		case c.PluginDir == "":
			fail(s.PathRange, "Invalid cri path", "relative path %q needs plugin_dir: the keeld executable's directory is unknown.", *s.Path)
		default:
			out.Path = filepath.Join(c.PluginDir, *s.Path)
		}
	}
	if s.Namespace != nil {
		out.Namespace = *s.Namespace
		if err := namespaces.Validate(out.Namespace); err != nil {
			fail(s.NamespaceRange, "Invalid cri namespace", "%v.", err)
		}
	}
	if s.SandboxImage != nil {
		out.SandboxImage = *s.SandboxImage
		if _, err := reference.ParseDockerRef(out.SandboxImage); err != nil {
			fail(s.SandboxImageRange, "Invalid cri sandbox_image", "sandbox_image %q is not an image reference: %v.", out.SandboxImage, err)
		}
	}
	if s.StreamAddress != nil {
		out.StreamAddress = *s.StreamAddress
		if _, err := netip.ParseAddr(out.StreamAddress); err != nil {
			fail(s.StreamAddressRange, "Invalid cri stream_address", "stream_address must be an IP address such as 127.0.0.1, not %q.", out.StreamAddress)
		}
	}
	if s.StreamPort != nil {
		out.StreamPort = *s.StreamPort
		if _, err := strconv.ParseUint(out.StreamPort, 10, 16); err != nil {
			fail(s.StreamPortRange, "Invalid cri stream_port", "stream_port must be a TCP port number (\"0\" for a free one), not %q.", out.StreamPort)
		}
	}
	return out
}

// CRIConfig is the cri block with keel's defaults filled in.
func (c *Config) CRIConfig() CRI {
	var out CRI
	if c.CRI != nil {
		out = *c.CRI
	}
	if out.Address == "" {
		out.Address = filepath.Join(c.State, DefaultCRISocketName)
	}
	if out.Path == "" {
		out.Path = filepath.Join(c.PluginDir, DefaultCRIPath)
	}
	if out.Namespace == "" {
		out.Namespace = DefaultCRINamespace
	}
	if out.SandboxImage == "" {
		out.SandboxImage = DefaultSandboxImage
	}
	if out.StreamAddress == "" {
		out.StreamAddress = DefaultStreamAddress
	}
	if out.StreamPort == "" {
		out.StreamPort = DefaultStreamPort
	}
	return out
}
