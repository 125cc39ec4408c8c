package main

import (
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func namespaceCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "namespace", Aliases: []string{"namespaces", "ns"}, Short: "Manage namespaces"}
	cmd.AddCommand(
		&cobra.Command{
			Use:     "ls",
			Aliases: []string{"list"},
			Short:   "List namespaces",
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				c, err := g.connect()
				if err != nil {
					return err
				}
				defer c.Close()
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
			},
		},
		&cobra.Command{
			Use:   "create NAME [KEY=VALUE...]",
			Short: "Create a namespace with labels",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				labels, _ := parseLabels(args[1:])
				_, err = c.Namespaces().Create(cmd.Context(), args[0], labels)
				return err
			},
		},
		&cobra.Command{
			Use:     "rm NAME...",
			Aliases: []string{"remove", "delete"},
			Short:   "Remove empty namespaces",
			Args:    cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				for _, name := range args {
					if err := c.Namespaces().Delete(cmd.Context(), name); err != nil {
						return err
					}
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "label NAME KEY=VALUE...",
			Short: "Set (KEY=VALUE) or remove (KEY=) labels of a namespace",
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.connect()
				if err != nil {
					return err
				}
				defer c.Close()
				labels, paths := parseLabels(args[1:])
				ns, err := c.Namespaces().Update(cmd.Context(), client.Namespace{Name: args[0], Labels: labels}, paths...)
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), table{header: []string{"NAME", "LABELS"},
					rows: [][]string{{ns.Name, formatLabels(ns.Labels)}}, ids: []string{ns.Name}, values: ns})
			},
		},
	)
	return cmd
}
