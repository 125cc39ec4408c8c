package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

// networkJSON is a network as `--format json` prints it.
type networkJSON struct {
	Name      string            `json:"name"`
	Bridge    string            `json:"bridge"`
	Subnet    string            `json:"subnet"`
	Gateway   string            `json:"gateway"`
	Default   bool              `json:"default"`
	Plugins   []string          `json:"plugins"`
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []endpointJSON    `json:"endpoints,omitempty"`
}

type endpointJSON struct {
	Namespace   string   `json:"namespace"`
	ContainerID string   `json:"container_id"`
	IfName      string   `json:"ifname"`
	IPs         []string `json:"ips"`
}

func toNetworkJSON(n client.Network) networkJSON {
	out := networkJSON{Name: n.Name, Bridge: n.Bridge, Subnet: n.Subnet, Gateway: n.Gateway, Default: n.Default, Plugins: n.Plugins, Labels: n.Labels}
	for _, e := range n.Endpoints {
		out.Endpoints = append(out.Endpoints, endpointJSON{Namespace: e.Namespace, ContainerID: e.ContainerID, IfName: e.IfName, IPs: e.IPs})
	}
	return out
}

func networkCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Aliases: []string{"networks", "net"}, Short: "Manage CNI networks (host-wide, of every namespace)"}
	cmd.AddCommand(networkLsCommand(g), networkCreateCommand(g), networkInspectCommand(g), networkRmCommand(g))
	return cmd
}

func networkLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the networks",
		Args:    cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Networks().List(cmd.Context())
			if err != nil {
				return err
			}
			t := table{header: []string{"NAME", "BRIDGE", "SUBNET", "GATEWAY", "DEFAULT", "LABELS"}}
			values := []networkJSON{}
			for _, n := range list {
				def := ""
				if n.Default {
					def = "*"
				}
				t.rows = append(t.rows, []string{n.Name, n.Bridge, n.Subnet, n.Gateway, def, formatLabels(n.Labels)})
				t.ids = append(t.ids, n.Name)
				values = append(values, toNetworkJSON(n))
			}
			t.values = values
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func networkCreateCommand(g *globals) *cobra.Command {
	var (
		o      client.NetworkCreateOpts
		labels []string
	)
	cmd := &cobra.Command{
		Use:   "create --subnet CIDR [flags] NAME",
		Short: "Create a bridge network (bridge, host-local IPAM, portmap, firewall)",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			o.Name = args[0]
			o.Labels, _ = parseLabels(labels)
			n, err := c.Networks().Create(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return printJSON(cmd.OutOrStdout(), toNetworkJSON(n))
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.Name)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Subnet, "subnet", "", "the network's subnet, e.g. 10.7.1.0/24 (required)")
	fl.StringVar(&o.Gateway, "gateway", "", "the bridge's address (default: the subnet's first)")
	fl.StringVar(&o.Bridge, "bridge", "", "the Linux bridge's name (default: keel- and the network's name, cut to 15 characters)")
	fl.StringArrayVar(&labels, "label", nil, "network label KEY=VALUE (repeatable)")
	return cmd
}

func networkInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Show networks with the containers attached (JSON)",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			out := []networkJSON{}
			for _, name := range args {
				n, err := c.Networks().Get(cmd.Context(), name)
				if err != nil {
					return err
				}
				out = append(out, toNetworkJSON(n))
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
}

func networkRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove networks (refused while a container's task is attached)",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, name := range args {
				if err := c.Networks().Delete(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return nil
		}),
	}
}
