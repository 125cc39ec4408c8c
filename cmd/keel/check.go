package main

import (
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
)

func checkCommand(g *globals) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Check keeld's data against its plugins and dirs (fsck); --repair applies the safe fixes",
		Long: `Check, in a running keeld, that every committed blob hashes to its digest,
that every snapshot record exists in its snapshotter plugin and the reverse
(parents included), that no mount, socket or temporary dir of a killed keeld
is left over, that every partial ingest is held by a lease, and that every
task belongs to a container and agrees with its shim.

Each problem is printed with its fix; --repair applies the fixes that lose
nothing still in use (leftovers, blobs whose bytes are wrong, records of
objects a plugin lost when nothing refers to them, plugin objects no record
refers to, tasks whose shim died). Repairs of ingests are made offline only.

While keeld is stopped (after a crash, before the restart), run the same
checks with: keeld check --config FILE [--repair] [--format json]

Exit status: 0 clean (or, with --repair, everything repaired), 1 problems
left, 2 the check could not run (in full).`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{offlineAnnotation: "to check while keeld is stopped, run keeld check --config FILE [--repair]"},
		RunE: exitOnError(client.CheckError, g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			rep, err := c.Check(cmd.Context(), repair)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.format == "json" {
				err = printJSON(w, rep)
			} else {
				err = rep.WriteTable(w)
			}
			if err != nil {
				return err
			}
			return exitCodeError{code: rep.ExitStatus()}
		})),
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "apply the safe fixes")
	return cmd
}
