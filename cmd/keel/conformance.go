package main

import (
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runner"
)

func conformanceCommand(g *globals) *cobra.Command {
	var kind, run, root string
	cmd := &cobra.Command{
		Use:   "conformance --kind KIND PLUGIN",
		Short: "Run keel's conformance suite against a plugin binary",
		Long: "conformance launches PLUGIN exactly as keeld does and runs the suite of its kind\n" +
			"(snapshotter, content, resolver, runtime). It exits 1 when any case fails.\n" +
			"Each case gets a fresh root under --root. Without --root, a plugin that refuses a temp\n" +
			"dir at Configure (FailedPrecondition, e.g. the btrfs snapshotter off btrfs) runs on a\n" +
			"loopback btrfs the suite makes (needs root and mkfs.btrfs) and removes at the end.",
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
			// Ctrl-C ends the run, not the process: the cases' cleanups
			// (plugins, mounts, a loopback btrfs) still run. The signals
			// stay caught until then, so a second Ctrl-C cannot skip them.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			failed, err := runner.RunCLIContext(ctx, kind, args[0], cmd.OutOrStdout(), g.format, opts...)
			if ctx.Err() != nil {
				return fmt.Errorf("%s conformance: %s: interrupted", kind, args[0])
			}
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
	cmd.Flags().StringVar(&root, "root", "", "directory for the plugin's roots (default: a temp dir, or a loopback btrfs\n"+
		"made for the run when the plugin refuses a temp dir, as keel-snapshotter-btrfs does)")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}
