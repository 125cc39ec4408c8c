package server

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

type checkService struct {
	keelv1.UnimplementedCheckServer
	s *Server
}

func (c checkService) Check(ctx context.Context, req *keelv1.CheckRequest) (*keelv1.CheckResponse, error) {
	rep := c.s.checker(false).Run(ctx, req.Repair)
	return CheckToProto(rep), nil
}

func (s *Server) checker(offline bool) *check.Checker {
	return &check.Checker{DB: s.db, Runtimes: s.runtimes, Root: s.cfg.Root, State: s.cfg.State, API: s.cfg.GRPC.Address,
		Offline: offline, IngestMaxAge: s.cfg.GCIngestMaxAge(), Logger: s.logger.Named("check")}
}

// CheckToProto is rep as the API's answer.
func CheckToProto(rep check.Report) *keelv1.CheckResponse {
	out := &keelv1.CheckResponse{Errors: rep.Errors}
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, &keelv1.CheckProblem{
			Kind: p.Kind, Object: p.Object, Problem: p.Problem, Fix: p.Fix,
			Safe: p.Safe, Repaired: p.Repaired, RepairError: p.RepairError,
		})
	}
	return out
}

// CheckOffline runs keel check while no keeld runs on cfg's dirs (right
// after a crash, say): it opens the metadata, which fails with Unavailable
// while a keeld holds it, starts the plugins, checks (and with repair,
// repairs), and stops them again. It does not sweep first: what a killed
// keeld left is reported, and removed only with repair.
func CheckOffline(ctx context.Context, cfg *config.Config, logger hclog.Logger, repair bool) (_ check.Report, err error) {
	s := newServer(cfg, logger)
	defer s.Stop(context.WithoutCancel(ctx))
	if err := s.openDB(); err != nil {
		if errdefs.IsUnavailable(err) {
			return check.Report{}, fmt.Errorf("%w; keeld runs: use keel check", err)
		}
		return check.Report{}, err
	}
	if err := s.startPlugins(ctx); err != nil {
		return check.Report{}, err
	}
	if err := s.startRuntimes(); err != nil {
		return check.Report{}, err
	}
	return s.checker(true).Run(ctx, repair), nil
}
