package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/version"
)

func versionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of keel and keeld",
		Args:  cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			out := map[string]any{"client": map[string]string{"version": version.Version, "go": runtime.Version()}}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			out["server"] = map[string]string{"version": v.Version, "revision": v.Revision, "go": v.GoVersion}
			if g.format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Client:\n  Version: %s\n  Go:      %s\nServer:\n  Version: %s\n  Revision: %s\n  Go:      %s\n",
				version.Version, runtime.Version(), v.Version, v.Revision, v.GoVersion)
			return nil
		}),
	}
}

func pluginsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "Inspect keeld's plugins"}
	cmd.AddCommand(pluginsLsCommand(g))
	return cmd
}

func pluginsLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the plugins keeld runs",
		Args:    cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			plugins, err := c.Plugins(cmd.Context())
			if err != nil {
				return err
			}
			t := table{header: []string{"KIND", "NAME", "VERSION", "PID", "STATE", "RESTARTS", "CAPABILITIES", "PATH"}, values: plugins}
			for _, p := range plugins {
				t.ids = append(t.ids, p.Kind+"."+p.Name)
				pid := "-" // no process: idle, starting, restarting, failed or stopped
				if p.Pid > 0 {
					pid = strconv.Itoa(p.Pid)
				}
				t.rows = append(t.rows, []string{p.Kind, p.Name, orDash(p.Version), pid, p.State,
					strconv.Itoa(p.Restarts), orDash(strings.Join(p.Capabilities, ",")), p.Path})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
