package runtime

import (
	"context"
	"fmt"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// NotImplemented answers every Runtime method with errdefs.ErrNotImplemented
// (Close with nil). Embed it so a runtime that supports a subset compiles
// and keeps compiling as the contract grows:
//
//	type myRuntime struct {
//		runtime.NotImplemented
//		…
//	}
type NotImplemented struct{}

var _ Runtime = NotImplemented{}

func (NotImplemented) Create(context.Context, CreateOpts) (uint32, error) {
	return 0, notImplemented("create")
}

func (NotImplemented) Start(context.Context, string, string) (uint32, error) {
	return 0, notImplemented("start")
}

func (NotImplemented) Delete(context.Context, string, string) (ExitStatus, error) {
	return ExitStatus{}, notImplemented("delete")
}

func (NotImplemented) Kill(context.Context, string, string, syscall.Signal, bool) error {
	return notImplemented("kill")
}

func (NotImplemented) Exec(context.Context, ExecOpts) error { return notImplemented("exec") }

func (NotImplemented) ResizePty(context.Context, string, string, uint32, uint32) error {
	return notImplemented("resize pty")
}

func (NotImplemented) CloseIO(context.Context, string, string) error {
	return notImplemented("close io")
}

func (NotImplemented) Pause(context.Context, string) error  { return notImplemented("pause") }
func (NotImplemented) Resume(context.Context, string) error { return notImplemented("resume") }

func (NotImplemented) Pids(context.Context, string) ([]ProcessInfo, error) {
	return nil, notImplemented("pids")
}

func (NotImplemented) Checkpoint(context.Context, string, CheckpointOpts) error {
	return notImplemented("checkpoint")
}

func (NotImplemented) Update(context.Context, string, *specs.LinuxResources, map[string]string) error {
	return notImplemented("update")
}

func (NotImplemented) Stats(context.Context, string) (Stats, error) {
	return Stats{}, notImplemented("stats")
}

func (NotImplemented) Wait(context.Context, string, string) (ExitStatus, error) {
	return ExitStatus{}, notImplemented("wait")
}

func (NotImplemented) State(context.Context, string, string) (TaskState, error) {
	return TaskState{}, notImplemented("state")
}

func (NotImplemented) List(context.Context) ([]TaskState, error) {
	return nil, notImplemented("list")
}

func (NotImplemented) Events(context.Context) (<-chan Event, <-chan error) {
	events := make(chan Event)
	errs := make(chan error, 1)
	errs <- notImplemented("events")
	close(errs)
	close(events)
	return events, errs
}

func (NotImplemented) Close() error { return nil }

func notImplemented(op string) error {
	return fmt.Errorf("runtime: %s: %w", op, errdefs.ErrNotImplemented)
}
