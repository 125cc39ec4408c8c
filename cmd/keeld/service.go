package main

import (
	"context"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/server"
)

// readyTimeout bounds how long keeld waits for its own API to answer before
// it tells systemd it is ready.
const readyTimeout = time.Minute

// notifyReady tells systemd (Type=notify) that keeld is ready once its API
// answers a call on its socket, not merely once the socket exists.
func notifyReady(ctx context.Context, srv *server.Server, address string, logger hclog.Logger) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	select {
	case <-srv.Ready():
	case <-ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		logger.Error("not ready: the API socket", "error", err)
		return
	}
	defer conn.Close()
	if _, err := keelv1.NewVersionClient(conn).Version(ctx, &keelv1.VersionRequest{}, grpc.WaitForReady(true)); err != nil {
		logger.Error("not ready: the API does not answer", "error", err)
		return
	}
	notify(logger, daemon.SdNotifyReady)
}

// notify sends state to systemd's notify socket, if keeld has one.
func notify(logger hclog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		logger.Warn("telling systemd", "state", state, "error", err)
	}
}

// reload reads the config file again and applies what can change live
// (server.Reload). A file that does not parse changes nothing.
func reload(ctx context.Context, srv *server.Server, configPath, logLevel string, logger hclog.Logger) {
	next, err := config.LoadOrDefault(configPath)
	if err != nil {
		logger.Error("config not reloaded, nothing changed", "error", err)
		return
	}
	if logLevel != "" {
		next.LogLevel = logLevel // --log-level stays over the file
	}
	srv.Reload(ctx, next)
}
