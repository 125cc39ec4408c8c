package runtime

import (
	"context"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/mount"
)

// server serves a Runtime over gRPC.
type server struct {
	pluginv1.UnimplementedRuntimeServer
	impl func(context.Context) (Runtime, error)
}

// NewServer serves the runtime impl returns for a call; impl may fail, e.g.
// before the plugin is configured.
func newServer(impl func(context.Context) (Runtime, error)) *server {
	return &server{impl: impl}
}

var _ pluginv1.RuntimeServer = (*server)(nil)

var empty = &pluginv1.Empty{}

// call runs fn on the runtime and converts its error for the wire.
func (s *server) call(ctx context.Context, fn func(Runtime) error) error {
	rt, err := s.impl(ctx)
	if err != nil {
		return err
	}
	return fn(rt)
}

func (s *server) Create(ctx context.Context, req *pluginv1.CreateTaskRequest) (*pluginv1.CreateTaskResponse, error) {
	var pid uint32
	err := s.call(ctx, func(rt Runtime) error {
		spec, err := unmarshalJSON[specs.Spec]("spec", req.Spec)
		if err != nil {
			return err
		}
		pid, err = rt.Create(ctx, CreateOpts{
			ID:         req.Id,
			Spec:       spec,
			Rootfs:     mount.FromProto(req.Rootfs),
			IO:         ioFromProto(req.Stdin, req.Stdout, req.Stderr, req.Terminal, req.KeepStdin, req.Log),
			Checkpoint: req.Checkpoint,
			Options:    req.Options,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pluginv1.CreateTaskResponse{Pid: pid}, nil
}

func (s *server) Start(ctx context.Context, req *pluginv1.TaskProcessRequest) (*pluginv1.StartTaskResponse, error) {
	var pid uint32
	err := s.call(ctx, func(rt Runtime) (err error) {
		pid, err = rt.Start(ctx, req.Id, req.ExecId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pluginv1.StartTaskResponse{Pid: pid}, nil
}

func (s *server) Delete(ctx context.Context, req *pluginv1.TaskProcessRequest) (*pluginv1.ExitStatus, error) {
	var st ExitStatus
	err := s.call(ctx, func(rt Runtime) (err error) {
		st, err = rt.Delete(ctx, req.Id, req.ExecId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return exitToProto(st), nil
}

func (s *server) Kill(ctx context.Context, req *pluginv1.KillRequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		return rt.Kill(ctx, req.Id, req.ExecId, syscall.Signal(req.Signal), req.All)
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Exec(ctx context.Context, req *pluginv1.ExecProcessRequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		spec, err := unmarshalJSON[specs.Process]("process spec", req.Spec)
		if err != nil {
			return err
		}
		return rt.Exec(ctx, ExecOpts{
			ID:     req.Id,
			ExecID: req.ExecId,
			Spec:   spec,
			IO:     ioFromProto(req.Stdin, req.Stdout, req.Stderr, req.Terminal, req.KeepStdin, req.Log),
		})
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) ResizePty(ctx context.Context, req *pluginv1.ResizePtyRequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		return rt.ResizePty(ctx, req.Id, req.ExecId, req.Width, req.Height)
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) CloseIO(ctx context.Context, req *pluginv1.CloseIORequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		if !req.Stdin {
			// stdin is the only stream a caller can close.
			return nil
		}
		return rt.CloseIO(ctx, req.Id, req.ExecId)
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Pause(ctx context.Context, req *pluginv1.TaskRequest) (*pluginv1.Empty, error) {
	if err := s.call(ctx, func(rt Runtime) error { return rt.Pause(ctx, req.Id) }); err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Resume(ctx context.Context, req *pluginv1.TaskRequest) (*pluginv1.Empty, error) {
	if err := s.call(ctx, func(rt Runtime) error { return rt.Resume(ctx, req.Id) }); err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Pids(ctx context.Context, req *pluginv1.TaskRequest) (*pluginv1.PidsResponse, error) {
	var ps []ProcessInfo
	err := s.call(ctx, func(rt Runtime) (err error) {
		ps, err = rt.Pids(ctx, req.Id)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &pluginv1.PidsResponse{Processes: make([]*pluginv1.ProcessInfo, len(ps))}
	for i, p := range ps {
		resp.Processes[i] = &pluginv1.ProcessInfo{Pid: p.Pid, ExecId: p.ExecID}
	}
	return resp, nil
}

func (s *server) Checkpoint(ctx context.Context, req *pluginv1.CheckpointTaskRequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		return rt.Checkpoint(ctx, req.Id, CheckpointOpts{Path: req.Path, Exit: req.Exit, Options: req.Options})
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Update(ctx context.Context, req *pluginv1.UpdateTaskRequest) (*pluginv1.Empty, error) {
	err := s.call(ctx, func(rt Runtime) error {
		res, err := unmarshalJSON[specs.LinuxResources]("resources", req.Resources)
		if err != nil {
			return err
		}
		return rt.Update(ctx, req.Id, res, req.Annotations)
	})
	if err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *server) Stats(ctx context.Context, req *pluginv1.TaskRequest) (*pluginv1.StatsResponse, error) {
	var st Stats
	err := s.call(ctx, func(rt Runtime) (err error) {
		st, err = rt.Stats(ctx, req.Id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pluginv1.StatsResponse{TypeUrl: st.TypeURL, Data: st.Data}, nil
}

func (s *server) Wait(ctx context.Context, req *pluginv1.TaskProcessRequest) (*pluginv1.ExitStatus, error) {
	var st ExitStatus
	err := s.call(ctx, func(rt Runtime) (err error) {
		st, err = rt.Wait(ctx, req.Id, req.ExecId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return exitToProto(st), nil
}

func (s *server) State(ctx context.Context, req *pluginv1.TaskProcessRequest) (*pluginv1.TaskState, error) {
	var st TaskState
	err := s.call(ctx, func(rt Runtime) (err error) {
		st, err = rt.State(ctx, req.Id, req.ExecId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return stateToProto(st), nil
}

func (s *server) List(ctx context.Context, _ *pluginv1.Empty) (*pluginv1.ListTasksResponse, error) {
	var tasks []TaskState
	err := s.call(ctx, func(rt Runtime) (err error) {
		tasks, err = rt.List(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &pluginv1.ListTasksResponse{Tasks: make([]*pluginv1.TaskState, len(tasks))}
	for i, t := range tasks {
		resp.Tasks[i] = stateToProto(t)
	}
	return resp, nil
}

func (s *server) Events(_ *pluginv1.Empty, stream pluginv1.Runtime_EventsServer) error {
	// The stream's context ends when the subscriber goes away or this
	// handler returns, which stops the runtime's sender either way.
	ctx := stream.Context()
	rt, err := s.impl(ctx)
	if err != nil {
		return err
	}
	events, errs := rt.Events(ctx)
	for ev := range events {
		if err := stream.Send(eventToProto(ev)); err != nil {
			return err
		}
	}
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
