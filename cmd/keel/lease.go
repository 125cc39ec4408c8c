package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func leaseCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Aliases: []string{"leases"}, Short: "Manage leases (resources held against garbage collection)"}
	cmd.AddCommand(leaseCreateCommand(g), leaseLsCommand(g), leaseRmCommand(g), leaseResourcesCommand(g))
	return cmd
}

func leaseCreateCommand(g *globals) *cobra.Command {
	var (
		id     string
		expire time.Duration
		labels []string
	)
	create := &cobra.Command{
		Use:   "create [--id ID] [--expire DURATION] [--label KEY=VALUE...]",
		Short: "Create a lease and print its id",
		Args:  cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			l, _ := parseLabels(labels)
			opts := []client.LeaseOpt{client.WithLeaseID(id), client.WithLeaseLabels(l)}
			if expire > 0 {
				opts = append(opts, client.WithLeaseExpiration(expire))
			}
			lease, err := c.CreateLease(cmd.Context(), opts...)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), lease.ID)
			return nil
		}),
	}
	create.Flags().StringVar(&id, "id", "", "lease id (default: generated)")
	create.Flags().DurationVar(&expire, "expire", 0, "expire after this long (label "+client.LabelGCExpire+"); 0 never")
	create.Flags().StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	return create
}

func leaseRmCommand(g *globals) *cobra.Command {
	var sync bool
	rm := &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove leases; garbage collection frees what only they held",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for i, id := range args {
				var opts []client.DeleteOpt
				if sync && i == len(args)-1 {
					opts = append(opts, client.WithSyncDelete())
				}
				if err := c.DeleteLease(cmd.Context(), id, opts...); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	rm.Flags().BoolVar(&sync, "sync", false, "wait for garbage collection to free what the leases held")
	return rm
}

func leaseLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List leases (filters: id, labels.KEY)",
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListLeases(cmd.Context(), args...)
			if err != nil {
				return err
			}
			t := table{header: []string{"ID", "CREATED", "EXPIRES", "LABELS"}, values: list}
			for _, l := range list {
				exp := l.Labels[client.LabelGCExpire]
				if exp == "" {
					exp = "-"
				}
				others := map[string]string{}
				for k, v := range l.Labels {
					if k != client.LabelGCExpire {
						others[k] = v
					}
				}
				t.ids = append(t.ids, l.ID)
				t.rows = append(t.rows, []string{l.ID, formatTime(l.CreatedAt), exp, formatLabels(others)})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func leaseResourcesCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resources ID",
		Short: "List what a lease holds",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.ListLeaseResources(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			t := table{header: []string{"TYPE", "ID"}, values: list}
			for _, r := range list {
				t.ids = append(t.ids, r.ID)
				t.rows = append(t.rows, []string{r.Type, r.ID})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}
