package client

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// NetworkMode is where a container's task finds its network.
type NetworkMode int

const (
	// NetworkDefault follows the spec: a namespace of its own with
	// loopback only, or the host's when the spec has no network namespace
	// (containerd's default).
	NetworkDefault NetworkMode = iota
	// NetworkNone is a namespace of its own with loopback only.
	NetworkNone
	// NetworkHost is the host's network namespace.
	NetworkHost
	// NetworkCNI is a namespace of its own, attached to CNI networks.
	NetworkCNI
	// NetworkContainer is another running container's namespace.
	NetworkContainer
)

func (m NetworkMode) String() string {
	switch m {
	case NetworkNone:
		return "none"
	case NetworkHost:
		return "host"
	case NetworkCNI:
		return "cni"
	case NetworkContainer:
		return "container"
	}
	return "default"
}

// ContainerNetwork is a container's network attachment, with nerdctl's
// semantics (--net, -p, --dns, --add-host).
type ContainerNetwork struct {
	Mode NetworkMode
	// Networks are NetworkCNI's networks (eth0, eth1, … in order); none
	// means keeld's default network.
	Networks []string
	// Container is NetworkContainer's container id.
	Container string
	// Ports are published on the first network.
	Ports      []PortMapping
	DNS        DNSConfig
	ExtraHosts []HostEntry
}

// PortMapping publishes ContainerPort on HostIP:HostPort (every address
// when HostIP is empty); Protocol is tcp (when empty) or udp.
type PortMapping struct {
	HostIP        string
	HostPort      uint16
	ContainerPort uint16
	Protocol      string
}

// String is the mapping as `docker ps` shows it: 127.0.0.1:8080->80/tcp.
func (p PortMapping) String() string {
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	host := p.HostIP
	if host == "" {
		host = "0.0.0.0"
	}
	return fmt.Sprintf("%s->%d/%s", netJoin(host, p.HostPort), p.ContainerPort, proto)
}

func netJoin(ip string, port uint16) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

// ParsePortMapping reads -p's [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp] (an
// IPv6 IP in brackets).
func ParsePortMapping(s string) (PortMapping, error) {
	bad := func(why string) (PortMapping, error) {
		return PortMapping{}, fmt.Errorf("port %q: %s (want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]): %w", s, why, errdefs.ErrInvalidArgument)
	}
	var p PortMapping
	rest, proto, ok := strings.Cut(s, "/")
	if ok {
		if proto != "tcp" && proto != "udp" {
			return bad("protocol " + strconv.Quote(proto))
		}
		p.Protocol = proto
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return bad("no host port")
	}
	cport, host := rest[i+1:], rest[:i]
	if j := strings.LastIndex(host, ":"); j >= 0 && !strings.HasSuffix(host, "]") {
		p.HostIP, host = strings.Trim(host[:j], "[]"), host[j+1:]
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return bad("host IP " + strconv.Quote(p.HostIP))
		}
	}
	hp, err := strconv.ParseUint(host, 10, 16)
	if err != nil || hp == 0 {
		return bad("host port " + strconv.Quote(host))
	}
	cp, err := strconv.ParseUint(cport, 10, 16)
	if err != nil || cp == 0 {
		return bad("container port " + strconv.Quote(cport))
	}
	p.HostPort, p.ContainerPort = uint16(hp), uint16(cp)
	return p, nil
}

// DNSConfig replaces the host's resolv.conf entries: Servers its
// nameservers, Search and Options its own, when given.
type DNSConfig struct {
	Servers []string
	Search  []string
	Options []string
}

// HostEntry is an /etc/hosts line.
type HostEntry struct {
	Host string
	IP   string
}

// ParseHostEntry reads --add-host's NAME:IP.
func ParseHostEntry(s string) (HostEntry, error) {
	name, ip, ok := strings.Cut(s, ":")
	if _, err := netip.ParseAddr(ip); !ok || name == "" || err != nil {
		return HostEntry{}, fmt.Errorf("host %q: want NAME:IP: %w", s, errdefs.ErrInvalidArgument)
	}
	return HostEntry{Host: name, IP: ip}, nil
}

// network is info's attachment, made on first use.
func (info *ContainerInfo) network() *ContainerNetwork {
	if info.Network == nil {
		info.Network = &ContainerNetwork{}
	}
	return info.Network
}

// WithNetwork attaches the container's task to CNI networks (eth0, eth1,
// … in order): keeld's default network when none is named.
func WithNetwork(names ...string) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		n := info.network()
		n.Mode, n.Networks = NetworkCNI, names
		return nil
	}
}

// WithHostNetwork runs the container's task in the host's network
// namespace, with the host's name, resolv.conf and hosts.
func WithHostNetwork() NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.network().Mode = NetworkHost
		return nil
	}
}

// WithNoNetwork gives the container's task a namespace of its own with
// loopback only.
func WithNoNetwork() NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.network().Mode = NetworkNone
		return nil
	}
}

// WithContainerNetwork runs the container's task in container id's
// network namespace (its task must run when this one is made).
func WithContainerNetwork(id string) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		n := info.network()
		n.Mode, n.Container = NetworkContainer, id
		return nil
	}
}

// WithPortMap publishes container ports on the host (CNI networks only).
func WithPortMap(ports ...PortMapping) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		n := info.network()
		n.Ports = append(n.Ports, ports...)
		return nil
	}
}

// WithDNS sets the container's resolvers.
func WithDNS(dns DNSConfig) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.network().DNS = dns
		return nil
	}
}

// WithExtraHosts adds lines to the container's /etc/hosts.
func WithExtraHosts(hosts ...HostEntry) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		n := info.network()
		n.ExtraHosts = append(n.ExtraHosts, hosts...)
		return nil
	}
}

// applyNetworkSpec makes info's spec agree with its network mode: the
// host's namespaces (and name and /sys) for NetworkHost, a namespace of
// its own for the others.
func applyNetworkSpec(ctx context.Context, info *ContainerInfo) error {
	if info.Network == nil || info.Spec == nil {
		return nil
	}
	if info.Network.Mode == NetworkHost {
		return oci.WithHostNamespace(specs.NetworkNamespace)(ctx, info.Spec)
	}
	if info.Network.Mode != NetworkDefault && info.Spec.Linux != nil {
		for _, n := range info.Spec.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				return nil
			}
		}
		info.Spec.Linux.Namespaces = append(info.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	return nil
}

// Hostname is container id as a hostname: at most 63 letters, digits and
// '-' (other characters become '-'), not starting or ending with '-'.
func Hostname(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

func networkToProto(n *ContainerNetwork) *keelv1.ContainerNetwork {
	if n == nil {
		return nil
	}
	out := &keelv1.ContainerNetwork{
		Mode: keelv1.NetworkMode(n.Mode), Networks: n.Networks, Container: n.Container,
		Dns: &keelv1.DNSConfig{Servers: n.DNS.Servers, Search: n.DNS.Search, Options: n.DNS.Options},
	}
	for _, p := range n.Ports {
		out.Ports = append(out.Ports, &keelv1.PortMapping{HostIp: p.HostIP, HostPort: uint32(p.HostPort), ContainerPort: uint32(p.ContainerPort), Protocol: p.Protocol})
	}
	for _, h := range n.ExtraHosts {
		out.ExtraHosts = append(out.ExtraHosts, &keelv1.HostEntry{Host: h.Host, Ip: h.IP})
	}
	return out
}

func networkFromProto(p *keelv1.ContainerNetwork) *ContainerNetwork {
	if p == nil {
		return nil
	}
	out := &ContainerNetwork{
		Mode: NetworkMode(p.Mode), Networks: p.Networks, Container: p.Container,
		DNS: DNSConfig{Servers: p.GetDns().GetServers(), Search: p.GetDns().GetSearch(), Options: p.GetDns().GetOptions()},
	}
	for _, pm := range p.Ports {
		out.Ports = append(out.Ports, PortMapping{HostIP: pm.HostIp, HostPort: uint16(pm.HostPort), ContainerPort: uint16(pm.ContainerPort), Protocol: pm.Protocol})
	}
	for _, h := range p.ExtraHosts {
		out.ExtraHosts = append(out.ExtraHosts, HostEntry{Host: h.Host, IP: h.Ip})
	}
	return out
}

// Network is a CNI network of keeld's.
type Network struct {
	Name    string
	Bridge  string
	Subnet  string
	Gateway string
	Labels  map[string]string
	// Default marks keeld's default network.
	Default bool
	// Plugins are its CNI plugin types, in order.
	Plugins []string
	// Endpoints are the tasks attached to it (Get only).
	Endpoints []NetworkEndpoint
	// MissingPlugins are the CNI plugin types of its conflist found in
	// none of keeld's cni_bin_dirs (Get only): until they are installed
	// the network cannot attach a task.
	MissingPlugins []string
}

// NetworkEndpoint is a task's interface on a network.
type NetworkEndpoint struct {
	Namespace   string
	ContainerID string
	IfName      string
	// IPs are its addresses in CIDR form.
	IPs []string
}

// NetworkCreateOpts are a new bridge network's settings; Subnet is
// required.
type NetworkCreateOpts struct {
	Name    string
	Bridge  string
	Subnet  string
	Gateway string
	Labels  map[string]string
}

// NetworkService manages keeld's networks (host-wide, of no namespace).
type NetworkService struct {
	c keelv1.NetworksClient
}

// Networks manages keeld's networks.
func (c *Client) Networks() *NetworkService {
	return &NetworkService{c: keelv1.NewNetworksClient(c.conn)}
}

// Create makes a bridge network. InvalidArgument for a bad name or
// subnet; AlreadyExists when its name, bridge or subnet is taken.
func (s *NetworkService) Create(ctx context.Context, o NetworkCreateOpts) (Network, error) {
	resp, err := s.c.Create(ctx, &keelv1.CreateNetworkRequest{Name: o.Name, Bridge: o.Bridge, Subnet: o.Subnet, Gateway: o.Gateway, Labels: o.Labels})
	if err != nil {
		return Network{}, err
	}
	return networkInfoFromProto(resp), nil
}

// Get returns a network with its endpoints; NotFound when absent.
func (s *NetworkService) Get(ctx context.Context, name string) (Network, error) {
	resp, err := s.c.Get(ctx, &keelv1.GetNetworkRequest{Name: name})
	if err != nil {
		return Network{}, err
	}
	return networkInfoFromProto(resp), nil
}

// List returns every network, by name.
func (s *NetworkService) List(ctx context.Context) ([]Network, error) {
	resp, err := s.c.List(ctx, &keelv1.ListNetworksRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]Network, len(resp.Networks))
	for i, n := range resp.Networks {
		out[i] = networkInfoFromProto(n)
	}
	return out, nil
}

// Delete removes a network; FailedPrecondition while a task is attached
// to it, or for keeld's default network.
func (s *NetworkService) Delete(ctx context.Context, name string) error {
	_, err := s.c.Delete(ctx, &keelv1.DeleteNetworkRequest{Name: name})
	return err
}

func networkInfoFromProto(p *keelv1.Network) Network {
	out := Network{Name: p.Name, Bridge: p.Bridge, Subnet: p.Subnet, Gateway: p.Gateway, Labels: p.Labels, Default: p.Default, Plugins: p.Plugins, MissingPlugins: p.MissingPlugins}
	for _, e := range p.Endpoints {
		out.Endpoints = append(out.Endpoints, NetworkEndpoint{Namespace: e.Namespace, ContainerID: e.ContainerId, IfName: e.Ifname, IPs: e.Ips})
	}
	return out
}
