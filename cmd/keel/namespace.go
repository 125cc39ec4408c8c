package main

import (
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func namespaceCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "namespace", Aliases: []string{"namespaces", "ns"}, Short: "Manage namespaces"}
	cmd.AddCommand(namespaceLsCommand(g), namespaceCreateCommand(g), namespaceRmCommand(g), namespaceLabelCommand(g))
	return cmd
}

func namespaceLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List namespaces",
		Args:    cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Namespaces().List(cmd.Context())
			if err != nil {
				return err
			}
			t := table{header: []string{"NAME", "LABELS"}, values: list}
			for _, ns := range list {
				t.ids = append(t.ids, ns.Name)
				t.rows = append(t.rows, []string{ns.Name, formatLabels(ns.Labels)})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func namespaceCreateCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "create NAME [KEY=VALUE...]",
		Short: "Create a namespace with labels",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			labels, _ := parseLabels(args[1:])
			_, err := c.Namespaces().Create(cmd.Context(), args[0], labels)
			return err
		}),
	}
}

func namespaceRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove empty namespaces",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, name := range args {
				if err := c.Namespaces().Delete(cmd.Context(), name); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

func namespaceLabelCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "label NAME KEY=VALUE...",
		Short: "Set (KEY=VALUE) or remove (KEY=) labels of a namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			labels, paths := parseLabels(args[1:])
			ns, err := c.Namespaces().Update(cmd.Context(), client.Namespace{Name: args[0], Labels: labels}, paths...)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{header: []string{"NAME", "LABELS"},
				rows: [][]string{{ns.Name, formatLabels(ns.Labels)}}, ids: []string{ns.Name}, values: ns})
		}),
	}
}
