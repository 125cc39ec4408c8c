package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/server"
)

func configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print, check or dump keeld's config",
		// A group: an argument that names none of its commands fails
		// (cobra would print the help and exit 0).
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
		},
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
			Long: "Check a config file as keeld's start would, short of starting the plugins: its syntax,\n" +
				"keys and values, and that each plugin's executable is there. Exit status 0 when valid,\n" +
				"1 with every problem at its file:line:col.",
			Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cfg, err := config.Load(args[0])
				if err == nil {
					err = checkPluginPaths(cfg)
				}
				if err != nil {
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

// checkPluginPaths says which plugin executables of cfg are missing (or
// no executable files), each at its path setting's file:line:col.
func checkPluginPaths(cfg *config.Config) error {
	var errs []error
	for _, p := range cfg.Plugins {
		fi, err := os.Stat(p.Path)
		if err == nil && (!fi.Mode().IsRegular() || fi.Mode()&0o111 == 0) {
			err = fmt.Errorf("%s is not an executable file", p.Path)
		}
		if err != nil {
			errs = append(errs, cfg.PluginError(p.Kind, p.Name, pathError{err}))
		}
	}
	return errors.Join(errs...)
}

// pathError is a problem of a plugin's path setting (config.SettingError).
type pathError struct{ error }

func (pathError) PluginSetting() (setting, key string) { return "path", "" }

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
