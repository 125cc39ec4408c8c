package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/server"
)

func configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print, check or dump keeld's config",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "default",
			Short: "Print the default config: every key, those at their default commented out",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				_, err := cmd.OutOrStdout().Write(config.DefaultHCL())
				return err
			},
		},
		&cobra.Command{
			Use:   "validate FILE",
			Short: "Check a config file: exit status 0 when valid, 1 with every problem (file:line:col)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if _, err := config.Load(args[0]); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					return exitCode(1)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n", args[0])
				return nil
			},
		},
		configDumpCommand(),
	)
	return cmd
}

func configDumpCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "dump [--config FILE]",
		Short: "Print the effective config, every key after defaults, as HCL",
		Long: "Print the config keeld would run with, every key at its value after defaults, as HCL.\n" +
			"Without --config: " + config.DefaultPath + " when present, else the embedded default.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadOrDefault(configPath)
			if err != nil {
				return err
			}
			out, err := server.DumpConfig(cfg)
			if err != nil {
				return err
			}
			if cfg.File != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "# keeld's effective config, from %s\n", cfg.File)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "# keeld's effective config, from its embedded default")
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "HCL config file")
	return cmd
}
