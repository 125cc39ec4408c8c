package network

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// cniVersion is the CNI spec version of the conflists keel writes: the
// newest that Debian's containernetworking-plugins 1.1.1 speak.
const cniVersion = "1.0.0"

// Bridge is a bridge network's settings.
type Bridge struct {
	Name string
	// Bridge is the Linux bridge's name.
	Bridge string
	Subnet netip.Prefix
	// Gateway is the bridge's address; the subnet's first when unset.
	Gateway      netip.Addr
	Masquerade   bool
	DefaultRoute bool
	Labels       map[string]string
}

// keelMeta is what keel keeps in a conflist besides CNI's keys (CNI
// ignores keys it does not know).
type keelMeta struct {
	Labels  map[string]string `json:"labels,omitempty"`
	Default bool              `json:"default,omitempty"`
}

// validName is a network name keel accepts: a CNI network name (and a
// file name), never a --net keyword.
func validName(name string) error {
	if name == "" || len(name) > 64 || name == "none" || name == "host" || name == "container" {
		return fmt.Errorf("network name %q: want 1 to 64 of [a-zA-Z0-9_.-], not none, host or container: %w", name, errdefs.ErrInvalidArgument)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '.' || r == '-')
		if !ok {
			return fmt.Errorf("network name %q: want 1 to 64 of [a-zA-Z0-9_.-], starting with a letter or digit: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ParseSubnet checks a subnet (and gateway, when given) for a bridge
// network: an IPv4 or IPv6 network with room for a gateway and a
// container, the gateway inside it. It returns the gateway to use.
func ParseSubnet(subnet, gateway string) (netip.Prefix, netip.Addr, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %q: not a network such as 10.7.1.0/24: %w", subnet, errdefs.ErrInvalidArgument)
	}
	if p.Masked() != p {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %q: host bits are set (the network is %s): %w", subnet, p.Masked(), errdefs.ErrInvalidArgument)
	}
	if p.Addr().BitLen()-p.Bits() < 2 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %q: too small for a gateway and a container: %w", subnet, errdefs.ErrInvalidArgument)
	}
	gw := p.Addr().Next()
	if gateway != "" {
		if gw, err = netip.ParseAddr(gateway); err != nil || !p.Contains(gw) || gw == p.Addr() {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("gateway %q: not an address of subnet %s: %w", gateway, subnet, errdefs.ErrInvalidArgument)
		}
	}
	return p, gw, nil
}

// conflist is b's CNI network configuration list: bridge with host-local
// IPAM (its allocations under ipamDir), portmap (published ports; snat so
// that the host's own 127.0.0.1:PORT works) and firewall.
func (b Bridge) conflist(ipamDir string, isDefault bool) ([]byte, error) {
	gw := b.Gateway
	if !gw.IsValid() {
		gw = b.Subnet.Addr().Next()
	}
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  [][]map[string]string{{{"subnet": b.Subnet.String(), "gateway": gw.String()}}},
		"dataDir": ipamDir,
	}
	if b.DefaultRoute {
		dst := "0.0.0.0/0"
		if b.Subnet.Addr().Is6() {
			dst = "::/0"
		}
		ipam["routes"] = []map[string]string{{"dst": dst}}
	}
	list := map[string]any{
		"cniVersion": cniVersion,
		"name":       b.Name,
		"plugins": []map[string]any{
			{
				"type": "bridge", "bridge": b.Bridge, "isGateway": true, "ipMasq": b.Masquerade,
				"hairpinMode": true, "ipam": ipam,
			},
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			{"type": "firewall"},
		},
		"keel": keelMeta{Labels: b.Labels, Default: isDefault},
	}
	return json.MarshalIndent(list, "", "  ")
}

// loopbackNetwork is the CNI network name under which an earlier keeld
// ran CNI's loopback plugin at each attach (newNetNS brings lo up now).
const loopbackNetwork = "keel-loopback"
