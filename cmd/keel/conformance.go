package main

import (
	"fmt"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/test/conformance"
)

func conformanceCommand(g *globals) *cobra.Command {
	var kind, run, root string
	cmd := &cobra.Command{
		Use:   "conformance --kind KIND PLUGIN",
		Short: "Run keel's conformance suite against a plugin binary",
		Long: "conformance launches PLUGIN exactly as keeld does and runs the suite of its kind\n" +
			"(snapshotter, content, resolver, runtime). It exits 1 when any case fails.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []conformance.Option
			if run != "" {
				re, err := regexp.Compile(run)
				if err != nil {
					return fmt.Errorf("--run: %w", err)
				}
				opts = append(opts, conformance.WithRun(re))
			}
			if root != "" {
				opts = append(opts, conformance.WithRootDir(root))
			}
			failed, err := conformance.RunCLI(kind, args[0], cmd.OutOrStdout(), g.format, opts...)
			if err != nil {
				return err
			}
			if failed {
				return fmt.Errorf("%s conformance: %s failed", kind, args[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&kind, "kind", "", "plugin kind: snapshotter, content, resolver or runtime")
	cmd.Flags().StringVar(&run, "run", "", "run only the cases whose name matches this regexp")
	cmd.Flags().StringVar(&root, "root", "", "directory for the plugin's roots (default: a temp dir)")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}
