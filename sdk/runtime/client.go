package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/mount"
)

// client is a Runtime reached over gRPC.
type client struct {
	c pluginv1.RuntimeClient
}

var _ Runtime = (*client)(nil)

func (c *client) Create(ctx context.Context, opts CreateOpts) (uint32, error) {
	spec, err := marshalJSON("spec", opts.Spec)
	if err != nil {
		return 0, err
	}
	resp, err := c.c.Create(ctx, &pluginv1.CreateTaskRequest{
		Id:         opts.ID,
		Spec:       spec,
		Rootfs:     mount.ToProto(opts.Rootfs),
		Stdin:      opts.IO.Stdin,
		Stdout:     opts.IO.Stdout,
		Stderr:     opts.IO.Stderr,
		Terminal:   opts.IO.Terminal,
		Log:        logToProto(opts.IO),
		KeepStdin:  opts.IO.KeepStdin,
		Checkpoint: opts.Checkpoint,
		Options:    opts.Options,
	})
	if err != nil {
		return 0, err
	}
	return resp.Pid, nil
}

func (c *client) Start(ctx context.Context, id, execID string) (uint32, error) {
	resp, err := c.c.Start(ctx, &pluginv1.TaskProcessRequest{Id: id, ExecId: execID})
	if err != nil {
		return 0, err
	}
	return resp.Pid, nil
}

func (c *client) Delete(ctx context.Context, id, execID string) (ExitStatus, error) {
	resp, err := c.c.Delete(ctx, &pluginv1.TaskProcessRequest{Id: id, ExecId: execID})
	if err != nil {
		return ExitStatus{}, err
	}
	return exitFromProto(resp), nil
}

func (c *client) Kill(ctx context.Context, id, execID string, sig syscall.Signal, all bool) error {
	_, err := c.c.Kill(ctx, &pluginv1.KillRequest{Id: id, ExecId: execID, Signal: uint32(sig), All: all})
	return err
}

func (c *client) Exec(ctx context.Context, opts ExecOpts) error {
	spec, err := marshalJSON("process spec", opts.Spec)
	if err != nil {
		return err
	}
	_, err = c.c.Exec(ctx, &pluginv1.ExecProcessRequest{
		Id:        opts.ID,
		ExecId:    opts.ExecID,
		Terminal:  opts.IO.Terminal,
		Stdin:     opts.IO.Stdin,
		Stdout:    opts.IO.Stdout,
		Stderr:    opts.IO.Stderr,
		Log:       logToProto(opts.IO),
		KeepStdin: opts.IO.KeepStdin,
		Spec:      spec,
	})
	return err
}

func (c *client) ResizePty(ctx context.Context, id, execID string, width, height uint32) error {
	_, err := c.c.ResizePty(ctx, &pluginv1.ResizePtyRequest{Id: id, ExecId: execID, Width: width, Height: height})
	return err
}

func (c *client) CloseIO(ctx context.Context, id, execID string) error {
	_, err := c.c.CloseIO(ctx, &pluginv1.CloseIORequest{Id: id, ExecId: execID, Stdin: true})
	return err
}

func (c *client) Pause(ctx context.Context, id string) error {
	_, err := c.c.Pause(ctx, &pluginv1.TaskRequest{Id: id})
	return err
}

func (c *client) Resume(ctx context.Context, id string) error {
	_, err := c.c.Resume(ctx, &pluginv1.TaskRequest{Id: id})
	return err
}

func (c *client) Pids(ctx context.Context, id string) ([]ProcessInfo, error) {
	resp, err := c.c.Pids(ctx, &pluginv1.TaskRequest{Id: id})
	if err != nil {
		return nil, err
	}
	ps := make([]ProcessInfo, len(resp.Processes))
	for i, p := range resp.Processes {
		ps[i] = ProcessInfo{Pid: p.Pid, ExecID: p.ExecId}
	}
	return ps, nil
}

func (c *client) Checkpoint(ctx context.Context, id string, opts CheckpointOpts) error {
	_, err := c.c.Checkpoint(ctx, &pluginv1.CheckpointTaskRequest{Id: id, Path: opts.Path, Exit: opts.Exit, Options: opts.Options})
	return err
}

func (c *client) Update(ctx context.Context, id string, resources *specs.LinuxResources, annotations map[string]string) error {
	res, err := marshalJSON("resources", resources)
	if err != nil {
		return err
	}
	_, err = c.c.Update(ctx, &pluginv1.UpdateTaskRequest{Id: id, Resources: res, Annotations: annotations})
	return err
}

func (c *client) Stats(ctx context.Context, id string) (Stats, error) {
	resp, err := c.c.Stats(ctx, &pluginv1.TaskRequest{Id: id})
	if err != nil {
		return Stats{}, err
	}
	return Stats{TypeURL: resp.TypeUrl, Data: resp.Data}, nil
}

func (c *client) Wait(ctx context.Context, id, execID string) (ExitStatus, error) {
	resp, err := c.c.Wait(ctx, &pluginv1.TaskProcessRequest{Id: id, ExecId: execID})
	if err != nil {
		return ExitStatus{}, err
	}
	return exitFromProto(resp), nil
}

func (c *client) State(ctx context.Context, id, execID string) (TaskState, error) {
	resp, err := c.c.State(ctx, &pluginv1.TaskProcessRequest{Id: id, ExecId: execID})
	if err != nil {
		return TaskState{}, err
	}
	return stateFromProto(resp), nil
}

func (c *client) List(ctx context.Context) ([]TaskState, error) {
	resp, err := c.c.List(ctx, &pluginv1.Empty{})
	if err != nil {
		return nil, err
	}
	tasks := make([]TaskState, len(resp.Tasks))
	for i, t := range resp.Tasks {
		tasks[i] = stateFromProto(t)
	}
	return tasks, nil
}

func (c *client) Events(ctx context.Context) (<-chan Event, <-chan error) {
	events := make(chan Event)
	errs := make(chan error, 1)
	go func() {
		defer close(events)
		defer close(errs)
		// Returning ends the stream's context, so the stream never outlives
		// this goroutine, nor this goroutine the caller's ctx.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if err := c.recvEvents(ctx, events); err != nil && ctx.Err() == nil {
			errs <- err
		}
	}()
	return events, errs
}

func (c *client) recvEvents(ctx context.Context, events chan<- Event) error {
	stream, err := c.c.Events(ctx, &pluginv1.Empty{})
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				// The subscriber did not ask for the end: tell it.
				return fmt.Errorf("events: stream ended by the runtime: %w", errdefs.ErrUnavailable)
			}
			return err
		}
		select {
		case events <- eventFromProto(msg):
		case <-ctx.Done():
			return nil
		}
	}
}

// Close does nothing: the connection belongs to whoever made it.
func (c *client) Close() error { return nil }
