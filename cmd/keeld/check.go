package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/server"
)

// exitCode makes keeld exit with that status, having said what it had to.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func checkCommand() *cobra.Command {
	var configPath, format, logLevel string
	var repair bool
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [--repair] [--format table|json]",
		Short: "Run keel check while keeld is stopped (offline)",
		Long: `Run keel check's checks in this process while no keeld runs on the
config's dirs (right after a crash, before the restart): open the metadata,
start the plugins, check, and with --repair apply the safe fixes, then stop
the plugins. What a killed keeld left is reported here (keeld's start would
sweep it). While keeld runs, the metadata is locked: use keel check.

Exit status: 0 clean (or, with --repair, everything repaired), 1 problems
left, 2 the check could not run (in full).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fail := func(err error) error {
				fmt.Fprintf(cmd.ErrOrStderr(), "keeld check: %v\n", err)
				return exitCode(client.CheckError)
			}
			if format != "table" && format != "json" {
				return fail(fmt.Errorf("--format must be table or json, not %q", format))
			}
			cfg, err := config.LoadOrDefault(configPath)
			if err != nil {
				return fail(err)
			}
			if logLevel == "" {
				logLevel = "warn"
			}
			logger := hclog.New(&hclog.LoggerOptions{Name: "keeld", Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
			rep, err := server.CheckOffline(cmd.Context(), cfg, logger, repair)
			if err != nil {
				return fail(err)
			}
			out := client.CheckReportFromProto(server.CheckToProto(rep))
			w := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				err = enc.Encode(out)
			} else {
				err = out.WriteTable(w)
			}
			if err != nil {
				return fail(err)
			}
			return exitCode(out.ExitStatus())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&configPath, "config", "c", "", "HCL config file (default "+config.DefaultPath+" when present, else the embedded default)")
	f.BoolVar(&repair, "repair", false, "apply the safe fixes")
	f.StringVar(&format, "format", "table", "output format: table or json")
	f.StringVarP(&logLevel, "log-level", "l", "", "trace, debug, info, warn or error (default warn)")
	return cmd
}
