// Command keel-cri serves Kubernetes' CRI for keel on a unix socket, as a
// client of keeld's API. keeld starts it when its config's cri block is
// enabled (and restarts it if it dies); it prints "serving <address>" on
// stdout once it listens, and logs JSON lines on stderr, which keeld
// relays into its own log.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/unixsock"
	"github.com/keel-runtime/keel/cri"
	"github.com/keel-runtime/keel/version"
)

func main() {
	var (
		address, keelAddress, namespace, sandboxImage, pausePath, logLevel string
		streamAddress                                                      string
		logJSON                                                            bool
	)
	cmd := &cobra.Command{
		Use:           "keel-cri",
		Short:         "Kubernetes' CRI for keel, as a client of keeld",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			logger := hclog.New(&hclog.LoggerOptions{
				Name: "cri", Level: hclog.LevelFromString(logLevel), Output: os.Stderr, JSONFormat: logJSON,
			})
			cfg := cri.Config{Namespace: namespace, SandboxImage: sandboxImage, PausePath: pausePath}
			// keel's own pause image is made from keel-pause, found
			// beside keel-cri unless named; any other is pulled.
			if cfg.PausePath == "" && sandboxImage == config.DefaultSandboxImage {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				cfg.PausePath = filepath.Join(filepath.Dir(exe), "keel-pause")
			}
			return run(address, keelAddress, streamAddress, cfg, logger)
		},
	}
	def := config.Default()
	f := cmd.Flags()
	f.StringVar(&address, "address", filepath.Join(config.DefaultState, config.DefaultCRISocketName), "the CRI's unix socket")
	f.StringVar(&keelAddress, "keel-address", def.GRPC.Address, "keeld's API socket")
	f.StringVar(&namespace, "namespace", config.DefaultCRINamespace, "keel namespace of the CRI's images, pods and containers")
	f.StringVar(&sandboxImage, "sandbox-image", config.DefaultSandboxImage, "the pods' pause image")
	f.StringVar(&pausePath, "pause-path", "", "keel-pause, to make the sandbox image from (default: beside keel-cri, for the default sandbox image)")
	f.StringVar(&streamAddress, "stream-address", net.JoinHostPort(config.DefaultStreamAddress, config.DefaultStreamPort),
		"host:port of the streaming server (exec, attach, port-forward); port 0 takes a free one")
	f.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.BoolVar(&logJSON, "log-json", false, "log JSON lines (as keeld reads them)")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "keel-cri: %v\n", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM or SIGINT.
func run(address, keelAddress, streamAddress string, cfg cri.Config, logger hclog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c, err := client.New(keelAddress, client.WithNamespace(cfg.Namespace))
	if err != nil {
		return fmt.Errorf("keeld at %s: %w", keelAddress, err)
	}
	defer c.Close()
	l, err := unixsock.Listen(address, 0, 0, "keel-cri")
	if err != nil {
		return err
	}
	defer os.Remove(address)
	srv := cri.New(c, cfg, logger)
	if cfg.PausePath != "" {
		// Made now so the first pod finds it; a failure here is retried
		// by the first RunPodSandbox.
		if img, err := cri.EnsurePauseImage(ctx, c, cfg.SandboxImage, cfg.PausePath); err != nil {
			logger.Warn("sandbox image not made", "image", cfg.SandboxImage, "error", err)
		} else {
			logger.Info("sandbox image", "image", img.Name, "digest", img.Target.Digest)
		}
	}
	if removed, err := srv.SweepImageVolumes(ctx); err != nil {
		logger.Warn("image volumes of removed containers not swept", "error", err)
	} else if len(removed) > 0 {
		logger.Info("image volumes of removed containers swept", "containers", removed)
	}
	streaming, err := srv.StartStreaming(streamAddress)
	if err != nil {
		l.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	logger.Info("serving", "address", address, "keeld", keelAddress, "namespace", cfg.Namespace, "streaming", streaming)
	fmt.Printf("serving %s\n", address)
	select {
	case err = <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Stop(shutdown)
	return nil
}
