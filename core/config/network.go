package config

import (
	"net/netip"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
)

// Defaults of the network block.
var (
	DefaultCNIBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
)

const (
	// DefaultNetworkName is the default network's name, as nerdctl's.
	DefaultNetworkName = "bridge"
	// DefaultNetworkBridge is the Linux bridge of the default network.
	DefaultNetworkBridge = "keel0"
	// DefaultNetworkSubnet is the default network's subnet (nerdctl's
	// nerdctl0 is 10.4.0.0/24; keel's differs so both can run on a host).
	DefaultNetworkSubnet = "10.7.0.0/24"
)

// Network is the `network {}` block: where the CNI plugins and network
// configs are, and the default network's settings.
type Network struct {
	CNIBinDirs []string `json:"cni_bin_dirs"`
	// CNIConfDir holds keel's network conflists (keel-owned).
	CNIConfDir string `json:"cni_conf_dir"`
	// Default network settings.
	DefaultName   string `json:"default_name"`
	DefaultBridge string `json:"default_bridge"`
	Subnet        string `json:"subnet"`
	Masquerade    bool   `json:"masquerade"`
	DefaultRoute  bool   `json:"default_route"`
}

type networkSchema struct {
	CNIBinDirs   *[]string `hcl:"cni_bin_dirs,optional"`
	CNIConfDir   *string   `hcl:"cni_conf_dir,optional"`
	Name         *string   `hcl:"name,optional"`
	NameRange    hcl.Range `hcl:"name,attr_value_range"`
	Bridge       *string   `hcl:"bridge,optional"`
	BridgeRange  hcl.Range `hcl:"bridge,attr_value_range"`
	Subnet       *string   `hcl:"subnet,optional"`
	SubnetRange  hcl.Range `hcl:"subnet,attr_value_range"`
	Masquerade   *bool     `hcl:"masquerade,optional"`
	DefaultRoute *bool     `hcl:"default_route,optional"`
}

func decodeNetwork(n *networkSchema, fail failFunc) *Network {
	out := &Network{}
	if n.CNIBinDirs != nil {
		out.CNIBinDirs = *n.CNIBinDirs
	}
	if n.CNIConfDir != nil {
		out.CNIConfDir = *n.CNIConfDir
	}
	if n.Name != nil {
		out.DefaultName = *n.Name
		if *n.Name == "" || *n.Name == "none" || *n.Name == "host" {
			fail(n.NameRange, "Invalid network name", "the default network's name must not be empty, none or host.")
		}
	}
	if n.Bridge != nil {
		out.DefaultBridge = *n.Bridge
		if l := len(*n.Bridge); l == 0 || l > 15 {
			fail(n.BridgeRange, "Invalid network bridge", "bridge %q: a Linux interface name is 1 to 15 characters.", *n.Bridge)
		}
	}
	if n.Subnet != nil {
		out.Subnet = *n.Subnet
		if p, err := netip.ParsePrefix(*n.Subnet); err != nil || p.Masked() != p || p.Bits() > 30 {
			fail(n.SubnetRange, "Invalid network subnet", "subnet %q is not a network such as 10.7.0.0/24 (with room for a gateway and containers).", *n.Subnet)
		}
	}
	out.Masquerade = n.Masquerade == nil || *n.Masquerade
	out.DefaultRoute = n.DefaultRoute == nil || *n.DefaultRoute
	return out
}

// NetworkConfig is the network block with keel's defaults filled in.
func (c *Config) NetworkConfig() Network {
	n := Network{Masquerade: true, DefaultRoute: true}
	if c.Network != nil {
		n = *c.Network
	}
	if len(n.CNIBinDirs) == 0 {
		n.CNIBinDirs = DefaultCNIBinDirs
	}
	if n.CNIConfDir == "" {
		n.CNIConfDir = filepath.Join(c.Root, "cni", "net.d")
	}
	if n.DefaultName == "" {
		n.DefaultName = DefaultNetworkName
	}
	if n.DefaultBridge == "" {
		n.DefaultBridge = DefaultNetworkBridge
	}
	if n.Subnet == "" {
		n.Subnet = DefaultNetworkSubnet
	}
	return n
}
