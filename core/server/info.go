package server

import (
	"context"
	"os"

	"github.com/containerd/cgroups/v3"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/version"
)

// systemService answers keel info.
type systemService struct {
	keelv1.UnimplementedSystemServer
	s *Server
}

func (sys systemService) Info(ctx context.Context, _ *keelv1.InfoRequest) (*keelv1.InfoResponse, error) {
	cfg := sys.s.AppliedConfig()
	plugins, err := pluginsService{host: sys.s.plugins}.List(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &keelv1.InfoResponse{
		Version:       version.Version,
		Revision:      version.Revision(),
		Root:          cfg.Root,
		State:         cfg.State,
		Address:       cfg.GRPC.Address,
		ConfigFile:    cfg.File,
		CgroupVersion: CgroupVersion(),
		Plugins:       plugins.Plugins,
		LogLevel:      cfg.LogLevel,
		LogFormat:     cfg.LogFormat,
		Pid:           int32(os.Getpid()),

		DefaultSnapshotter: cfg.DefaultSnapshotter,
		Cri:                sys.s.cri.status(),
	}, nil
}

// CgroupVersion names the host's cgroup mode: "v1", "hybrid" (v1 with a
// v2 hierarchy beside it), "v2", or "none".
func CgroupVersion() string {
	switch cgroups.Mode() {
	case cgroups.Legacy:
		return "v1"
	case cgroups.Hybrid:
		return "hybrid"
	case cgroups.Unified:
		return "v2"
	}
	return "none"
}

// Ready is closed once Serve listens on the API socket.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// DumpConfig writes c as HCL with every key at the value keeld applies,
// the image limits' defaults included (keeld config dump). The two Limits
// types hold the same fields.
func DumpConfig(c *config.Config) ([]byte, error) {
	return c.HCL(config.Limits(imageLimits(c).WithDefaults()))
}
