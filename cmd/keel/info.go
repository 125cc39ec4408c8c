package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func infoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show how keeld runs: version, directories, socket, config file, cgroups, plugins",
		Args:  cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			info, err := c.Info(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.format == "json" {
				return printJSON(w, info)
			}
			configFile := info.ConfigFile
			if configFile == "" {
				configFile = "(embedded default)"
			}
			tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
			for _, kv := range [][2]string{
				{"Version", info.Version}, {"Revision", orDash(info.Revision)}, {"Pid", fmt.Sprint(info.Pid)},
				{"Root", info.Root}, {"State", info.State}, {"Socket", info.Address},
				{"Config file", configFile}, {"Log", info.LogLevel + ", " + info.LogFormat},
				{"Cgroup version", info.CgroupVersion}, {"Default snapshotter", orDash(info.DefaultSnapshotter)},
				{"CRI", criLine(info.CRI)},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
			}
			fmt.Fprintln(tw, "Plugins:")
			for _, p := range info.Plugins {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Kind, p.Name, p.State)
			}
			return tw.Flush()
		}),
	}
}

// criLine is keel-cri's health in one line: "-" when not enabled.
func criLine(c *client.CRIServer) string {
	if c == nil {
		return "-"
	}
	s := fmt.Sprintf("%s %s (pid %d, %d restarts, namespace %s)", c.State, c.Address, c.Pid, c.Restarts, c.Namespace)
	if c.LastError != "" {
		s += ": " + c.LastError
	}
	return s
}
