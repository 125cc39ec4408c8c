package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

// containerJSON is a container as `--format json` prints it.
type containerJSON struct {
	ID          string            `json:"id"`
	Image       string            `json:"image"`
	Snapshotter string            `json:"snapshotter"`
	SnapshotKey string            `json:"snapshot_key"`
	Runtime     string            `json:"runtime"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	Spec        any               `json:"spec,omitempty"`
}

func toContainerJSON(info client.ContainerInfo, spec bool) containerJSON {
	out := containerJSON{ID: info.ID, Image: info.Image, Snapshotter: info.Snapshotter, SnapshotKey: info.SnapshotKey,
		Runtime: info.Runtime, Labels: info.Labels, CreatedAt: info.CreatedAt, UpdatedAt: info.UpdatedAt}
	if spec {
		out.Spec = info.Spec
	}
	return out
}

func containerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "container", Aliases: []string{"containers", "c"}, Short: "Manage containers (records a task runs from)"}
	cmd.AddCommand(containerCreateCommand(g), containerLsCommand(g), containerInfoCommand(g), containerRmCommand(g), containerLabelCommand(g))
	return cmd
}

func containerCreateCommand(g *globals) *cobra.Command {
	var f runFlags
	create := &cobra.Command{
		Use:   "create [flags] IMAGE ID [ARGS...]",
		Short: "Record a container from an image (its rootfs a new snapshot)",
		Args:  cobra.MinimumNArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ctr, err := f.newContainer(cmd.Context(), c, args[0], args[1], args[2:])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), ctr.ID())
			return nil
		}),
	}
	// Flags after IMAGE/ID belong to the process.
	create.Flags().SetInterspersed(false)
	f.register(create)
	return create
}

func containerLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List containers (filters: id, image, runtime, snapshotter, labels.KEY)",
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			list, err := c.Containers(cmd.Context(), args...)
			if err != nil {
				return err
			}
			t := table{header: []string{"ID", "IMAGE", "RUNTIME", "SNAPSHOTTER", "LABELS"}, values: []containerJSON{}}
			var values []containerJSON
			for _, ct := range list {
				i := ct.Info()
				t.rows = append(t.rows, []string{i.ID, i.Image, i.Runtime, i.Snapshotter, formatLabels(i.Labels)})
				t.ids = append(t.ids, i.ID)
				values = append(values, toContainerJSON(i, false))
			}
			if values != nil {
				t.values = values
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func containerInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info ID",
		Short: "Print a container's record, spec included, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := c.LoadContainer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), toContainerJSON(ct.Info(), true))
		}),
	}
}

func containerRmCommand(g *globals) *cobra.Command {
	var force bool
	rm := &cobra.Command{
		Use:     "rm [--force] ID...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove containers; refused while a task runs unless --force (which kills it)",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, id := range args {
				ct, err := c.LoadContainer(cmd.Context(), id)
				if err != nil {
					return err
				}
				var opts []client.ContainerDeleteOpt
				if force {
					opts = append(opts, client.WithForce)
				}
				if err := ct.Delete(cmd.Context(), opts...); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	rm.Flags().BoolVarP(&force, "force", "f", false, "kill and delete a running task first")
	return rm
}

func containerLabelCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "label ID KEY=VALUE...",
		Short: "Set (KEY=VALUE) or remove (KEY=) container labels",
		Args:  cobra.MinimumNArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := c.LoadContainer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			set := map[string]string{}
			for _, a := range args[1:] {
				k, v, _ := strings.Cut(a, "=")
				set[k] = v
			}
			labels, err := ct.SetLabels(cmd.Context(), set)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(labels)
			}
			fmt.Fprintln(cmd.OutOrStdout(), formatLabels(labels))
			return nil
		}),
	}
}
