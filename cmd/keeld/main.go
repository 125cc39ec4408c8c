// Command keeld is keel's daemon: it reads its HCL config (or the embedded
// default), starts its plugins and serves the keel.v1 API on a unix socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/server"
	"github.com/keel-runtime/keel/version"
)

func main() {
	var configPath, logLevel string
	cmd := &cobra.Command{
		Use:   "keeld",
		Short: "keel's container runtime daemon",
		Long: "keeld serves keel's API on a unix socket and runs its plugins.\n" +
			"Without --config it reads " + config.DefaultPath + " when present, else its embedded default.",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadOrDefault(configPath)
			if err != nil {
				return err
			}
			if logLevel != "" {
				cfg.LogLevel = logLevel
			}
			return run(cfg, configPath, logLevel)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "HCL config file")
	cmd.Flags().StringVarP(&logLevel, "log-level", "l", "", "trace, debug, info, warn or error (overrides the config)")
	cmd.AddCommand(checkCommand(), configCommand())
	if err := cmd.Execute(); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintf(os.Stderr, "keeld: %v\n", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM or SIGINT; a SIGHUP reloads the config
// (configPath, as at the start; logLevel, when set, stays over the file's).
func run(cfg *config.Config, configPath, logLevel string) error {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "keeld",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		Output:     os.Stderr,
		JSONFormat: cfg.LogFormat == "json",
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// From now on a SIGHUP no longer kills keeld: one that comes while
	// it starts is applied once it serves.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	srv, err := server.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	go notifyReady(ctx, srv, cfg.GRPC.Address, logger)
	for done := false; !done; {
		select {
		case err = <-errc:
			done = true
		case <-ctx.Done():
			logger.Info("shutting down")
			done = true
		case <-hup:
			reload(ctx, srv, configPath, logLevel, logger)
		}
	}
	notify(logger, daemon.SdNotifyStopping)
	shutdown, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv.Stop(shutdown)
	return err
}
