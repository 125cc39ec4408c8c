package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// netFlags are run's and container create's network flags, as nerdctl's.
type netFlags struct {
	nets      []string
	ports     []string
	dns       []string
	dnsSearch []string
	dnsOpts   []string
	hostname  string
	addHosts  []string
}

func (f *netFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.nets, "net", []string{"bridge"}, "network: bridge (keeld's default network), none (loopback only), host, NETWORK (repeatable: eth0, eth1…) or container:ID")
	fl.StringArrayVarP(&f.ports, "publish", "p", nil, "publish a container port: [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp] (repeatable)")
	fl.StringArrayVar(&f.dns, "dns", nil, "DNS server, replacing the host's (repeatable)")
	fl.StringArrayVar(&f.dnsSearch, "dns-search", nil, "DNS search domain (repeatable)")
	fl.StringArrayVar(&f.dnsOpts, "dns-option", nil, "DNS resolver option (repeatable)")
	fl.StringVar(&f.hostname, "hostname", "", "the container's hostname (default: its id)")
	fl.StringArrayVar(&f.addHosts, "add-host", nil, "an /etc/hosts entry NAME:IP (repeatable)")
}

// containerOpts are the container options of the flags for container id,
// and the spec options (its hostname).
func (f *netFlags) containerOpts(id string) ([]client.NewContainerOpt, []oci.SpecOpt, error) {
	var opts []client.NewContainerOpt
	bad := func(format string, a ...any) error {
		return fmt.Errorf("--net: %s: %w", fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	nets := f.nets
	if len(nets) == 0 {
		nets = []string{"bridge"}
	}
	mode := client.NetworkCNI
	for _, n := range nets {
		switch {
		case n == "none", n == "host", strings.HasPrefix(n, "container:"):
			if len(nets) > 1 {
				return nil, nil, bad("%s goes alone, not with %s", n, strings.Join(nets, ", "))
			}
		case n == "":
			return nil, nil, bad("empty network name")
		}
		switch {
		case n == "none":
			mode = client.NetworkNone
			opts = append(opts, client.WithNoNetwork())
		case n == "host":
			mode = client.NetworkHost
			opts = append(opts, client.WithHostNetwork())
		case strings.HasPrefix(n, "container:"):
			mode = client.NetworkContainer
			other := strings.TrimPrefix(n, "container:")
			if other == "" || other == id {
				return nil, nil, bad("container: names another container's id")
			}
			opts = append(opts, client.WithContainerNetwork(other))
		}
	}
	if mode == client.NetworkCNI {
		names := nets
		if len(nets) == 1 && nets[0] == "bridge" {
			names = nil // keeld's default network, whatever its config names it
		}
		opts = append(opts, client.WithNetwork(names...))
	}
	var ports []client.PortMapping
	for _, s := range f.ports {
		p, err := client.ParsePortMapping(s)
		if err != nil {
			return nil, nil, err
		}
		ports = append(ports, p)
	}
	if len(ports) > 0 {
		if mode != client.NetworkCNI {
			return nil, nil, fmt.Errorf("-p: ports are published on CNI networks, not with --net %s: %w", nets[0], errdefs.ErrInvalidArgument)
		}
		opts = append(opts, client.WithPortMap(ports...))
	}
	if len(f.dns)+len(f.dnsSearch)+len(f.dnsOpts) > 0 {
		if mode == client.NetworkContainer {
			return nil, nil, fmt.Errorf("--dns: a container on another's network shares its resolv.conf: %w", errdefs.ErrInvalidArgument)
		}
		opts = append(opts, client.WithDNS(client.DNSConfig{Servers: f.dns, Search: f.dnsSearch, Options: f.dnsOpts}))
	}
	var hosts []client.HostEntry
	for _, s := range f.addHosts {
		h, err := client.ParseHostEntry(s)
		if err != nil {
			return nil, nil, err
		}
		hosts = append(hosts, h)
	}
	if len(hosts) > 0 {
		opts = append(opts, client.WithExtraHosts(hosts...))
	}
	var specOpts []oci.SpecOpt
	switch {
	case mode == client.NetworkHost && f.hostname != "":
		return nil, nil, fmt.Errorf("--hostname: a container on the host's network has the host's name: %w", errdefs.ErrInvalidArgument)
	case f.hostname != "":
		specOpts = append(specOpts, oci.WithHostname(f.hostname))
	case mode != client.NetworkHost:
		specOpts = append(specOpts, oci.WithHostname(client.Hostname(id)))
	}
	return opts, specOpts, nil
}
