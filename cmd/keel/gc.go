package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func gcCommand(g *globals) *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Collect garbage now and print what was freed",
		Long: `Collect garbage in every namespace: content and snapshots no image,
container or unexpired lease reaches (through gc.ref labels and snapshot
parents) are removed, expired leases are deleted, and plugin objects no
metadata refers to (orphans, e.g. left by a crash) are removed.
With --dry-run nothing changes; every decision is printed with the root
that keeps an object or the reason it would go.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			defer c.Close()
			var opts []client.GCOpt
			if dry {
				opts = append(opts, client.WithDryRun())
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
			var freed int64
			for _, o := range rep.Removed {
				freed += o.Size
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", verb, o.Kind, dash(o.Namespace), o.Name, o.Reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, e := range rep.Errors {
				fmt.Fprintf(w, "error: %s\n", e)
			}
			if dry {
				fmt.Fprintf(w, "dry run: would remove %d objects (%s of content)\n", len(rep.Removed), humanSize(freed))
			} else {
				fmt.Fprintf(w, "removed %d objects (%s of content) in %s\n", len(rep.Removed), humanSize(freed), rep.Duration.Round(1000))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "change nothing; explain what is kept (and by which root) and what would go")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
