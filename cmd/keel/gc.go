package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func gcCommand(g *globals) *cobra.Command {
	var dry, ingests bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--ingests]",
		Short: "Collect garbage now and print what was freed",
		Long: `Collect garbage in every namespace: content and snapshots no image,
container or unexpired lease reaches (through gc.ref labels and snapshot
parents) are removed, expired leases are deleted, and plugin objects no
metadata refers to (orphans, e.g. left by a crash) are removed.
Partial ingests (downloads never committed, e.g. left by a failed pull)
that no running writer or live lease holds go once untouched for the gc
block's ingest_max_age (default 24h); --ingests removes them now.
With --dry-run nothing changes; every decision is printed with the root
that keeps an object or the reason it would go.`,
		Args: cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			var opts []client.GCOpt
			if dry {
				opts = append(opts, client.WithDryRun())
			}
			if ingests {
				opts = append(opts, client.WithIngests())
			}
			rep, err := c.GarbageCollect(cmd.Context(), opts...)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.format == "json" {
				return printJSON(w, rep)
			}
			if g.quiet {
				for _, o := range rep.Removed {
					fmt.Fprintln(w, o.Name)
				}
				return nil
			}
			verb := "removed"
			if dry {
				verb = "remove"
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACTION\tKIND\tNAMESPACE\tNAME\tWHY")
			for _, o := range rep.Kept {
				fmt.Fprintf(tw, "keep\t%s\t%s\t%s\tkept by %s\n", o.Kind, dash(o.Namespace), o.Name, o.Root)
			}
			var freed, ingested int64
			for _, o := range rep.Removed {
				if o.Kind == "ingest" {
					ingested += o.Size
				} else {
					freed += o.Size
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", verb, o.Kind, dash(o.Namespace), o.Name, o.Reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, e := range rep.Errors {
				fmt.Fprintf(w, "error: %s\n", e)
			}
			if dry {
				fmt.Fprintf(w, "dry run: would remove %d objects (%s of content, %s of partial ingests)\n", len(rep.Removed), humanSize(freed), humanSize(ingested))
			} else {
				fmt.Fprintf(w, "removed %d objects (%s of content, %s of partial ingests) in %s\n", len(rep.Removed), humanSize(freed), humanSize(ingested), rep.Duration.Round(1000))
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "change nothing; explain what is kept (and by which root) and what would go")
	cmd.Flags().BoolVar(&ingests, "ingests", false, "also remove every partial ingest no running writer or live lease holds, however recent")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
