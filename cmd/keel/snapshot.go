package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func snapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Aliases: []string{"snapshots"}, Short: "Manage snapshots"}
	cmd.PersistentFlags().String("snapshotter", "", "snapshotter (default: keeld's default_snapshotter)")
	cmd.AddCommand(snapshotLsCommand(g), snapshotTreeCommand(g), snapshotInfoCommand(g), snapshotMountsCommand(g),
		snapshotPrepareCommand(g, "prepare KEY [PARENT]", "Make an active snapshot on PARENT (or empty)", cobra.RangeArgs(1, 2),
			func(ctx context.Context, sn snapshot.Snapshotter, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
				return sn.Prepare(ctx, key, parent, opts...)
			}),
		snapshotPrepareCommand(g, "view KEY PARENT", "Make a read-only view of PARENT", cobra.ExactArgs(2),
			func(ctx context.Context, sn snapshot.Snapshotter, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
				return sn.View(ctx, key, parent, opts...)
			}),
		snapshotCommitCommand(g), snapshotRmCommand(g), snapshotUsageCommand(g), snapshotLabelCommand(g))
	return cmd
}

// withSnapshotter is a command's RunE that runs fn connected to keeld, on
// the snapshotter --snapshotter names.
func withSnapshotter(g *globals, fn func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error) func(*cobra.Command, []string) error {
	return g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
		name, _ := cmd.Flags().GetString("snapshotter")
		return fn(cmd, c.SnapshotService(name), args)
	})
}

func snapshotLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List snapshots (filters: name, parent, kind, labels.KEY)",
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			infos, err := walkAll(cmd.Context(), sn, args...)
			if err != nil {
				return err
			}
			t := table{header: []string{"KEY", "PARENT", "KIND", "AGE", "LABELS"}, values: infos}
			for _, info := range infos {
				t.ids = append(t.ids, info.Name)
				t.rows = append(t.rows, []string{info.Name, orDash(info.Parent), info.Kind.String(),
					age(info.Created), formatLabels(info.Labels)})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func snapshotTreeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tree",
		Short: "Show snapshots as a tree of parents and children",
		Args:  cobra.NoArgs,
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, _ []string) error {
			infos, err := walkAll(cmd.Context(), sn)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return printJSON(cmd.OutOrStdout(), infos)
			}
			printTree(cmd.OutOrStdout(), infos)
			return nil
		}),
	}
}

func snapshotInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info KEY",
		Short: "Show a snapshot's info",
		Args:  cobra.ExactArgs(1),
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			info, err := sn.Stat(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), snapshotJSON(info))
		}),
	}
}

func snapshotMountsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mounts TARGET KEY",
		Short: "Print the mount commands for an active snapshot or view",
		Args:  cobra.ExactArgs(2),
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			ms, err := sn.Mounts(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			return printMounts(cmd.OutOrStdout(), g, args[0], ms)
		}),
	}
}

func snapshotCommitCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "commit NAME KEY",
		Short: "Commit the active snapshot KEY as NAME",
		Args:  cobra.ExactArgs(2),
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			return sn.Commit(cmd.Context(), args[0], args[1])
		}),
	}
}

func snapshotRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm KEY...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove snapshots",
		Args:    cobra.MinimumNArgs(1),
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			for _, key := range args {
				if err := sn.Remove(cmd.Context(), key); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

func snapshotUsageCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "usage [KEY...]",
		Short: "Show the disk use of snapshots (all without KEY)",
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			keys := args
			if len(keys) == 0 {
				infos, err := walkAll(cmd.Context(), sn)
				if err != nil {
					return err
				}
				for _, info := range infos {
					keys = append(keys, info.Name)
				}
			}
			type row struct {
				Key string `json:"key"`
				snapshot.Usage
			}
			t := table{header: []string{"KEY", "SIZE", "INODES"}}
			var rows []row
			for _, key := range keys {
				u, err := sn.Usage(cmd.Context(), key)
				if err != nil {
					return err
				}
				rows = append(rows, row{key, u})
				t.ids = append(t.ids, key)
				t.rows = append(t.rows, []string{key, strconv.FormatInt(u.Size, 10), strconv.FormatInt(u.Inodes, 10)})
			}
			t.values = rows
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func snapshotLabelCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "label KEY KEY=VALUE...",
		Short: "Set (KEY=VALUE) or remove (KEY=) labels of a snapshot",
		Args:  cobra.MinimumNArgs(2),
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			labels, paths := parseLabels(args[1:])
			info, err := sn.Update(cmd.Context(), snapshot.Info{Name: args[0], Labels: labels}, paths...)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), formatLabels(info.Labels))
			return nil
		}),
	}
}

type makeSnapshot func(ctx context.Context, sn snapshot.Snapshotter, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error)

// snapshotPrepareCommand builds prepare and view, which differ only in the
// call.
func snapshotPrepareCommand(g *globals, use, short string, args cobra.PositionalArgs, call makeSnapshot) *cobra.Command {
	var target string
	var labelArgs []string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: withSnapshotter(g, func(cmd *cobra.Command, sn snapshot.Snapshotter, args []string) error {
			parent := ""
			if len(args) > 1 {
				parent = args[1]
			}
			labels, _ := parseLabels(labelArgs)
			ms, err := call(cmd.Context(), sn, args[0], parent, snapshot.WithLabels(labels))
			if err != nil {
				return err
			}
			if target == "" {
				return nil
			}
			return printMounts(cmd.OutOrStdout(), g, target, ms)
		}),
	}
	cmd.Flags().StringVar(&target, "target", "", "print the mount commands for this target directory")
	cmd.Flags().StringSliceVar(&labelArgs, "label", nil, "labels KEY=VALUE")
	return cmd
}

func walkAll(ctx context.Context, sn snapshot.Snapshotter, filters ...string) ([]snapshot.Info, error) {
	var infos []snapshot.Info
	err := sn.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		infos = append(infos, info)
		return nil
	}, filters...)
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, err
}

type snapshotInfoJSON struct {
	Name    string            `json:"name"`
	Parent  string            `json:"parent,omitempty"`
	Kind    string            `json:"kind"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created string            `json:"created"`
	Updated string            `json:"updated"`
}

func snapshotJSON(info snapshot.Info) snapshotInfoJSON {
	return snapshotInfoJSON{Name: info.Name, Parent: info.Parent, Kind: info.Kind.String(), Labels: info.Labels,
		Created: info.Created.Format("2006-01-02T15:04:05.000000000Z07:00"), Updated: info.Updated.Format("2006-01-02T15:04:05.000000000Z07:00")}
}

// printMounts prints mounts as mount(8) commands, or as JSON.
func printMounts(w io.Writer, g *globals, target string, ms []mount.Mount) error {
	if g.format == "json" {
		return printJSON(w, ms)
	}
	for _, m := range ms {
		fmt.Fprintf(w, "mount -t %s %s %s -o %s\n", m.Type, m.Source, target, strings.Join(m.Options, ","))
	}
	return nil
}

// printTree prints each snapshot under its parent.
func printTree(w io.Writer, infos []snapshot.Info) {
	children := map[string][]snapshot.Info{}
	known := map[string]bool{}
	for _, info := range infos {
		known[info.Name] = true
	}
	for _, info := range infos {
		parent := info.Parent
		if !known[parent] {
			parent = ""
		}
		children[parent] = append(children[parent], info)
	}
	var walk func(parent, indent string)
	walk = func(parent, indent string) {
		for _, info := range children[parent] {
			fmt.Fprintf(w, "%s%s (%s)\n", indent, info.Name, info.Kind)
			walk(info.Name, indent+"  ")
		}
	}
	walk("", "")
}
