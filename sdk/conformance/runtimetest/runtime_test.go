package runtimetest_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance/runner"
	"github.com/keel-runtime/keel/sdk/conformance/runtimetest"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/load"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// The runtime suite runs here against small in-test plugins, across gRPC:
// one that conforms must pass, one that does not must fail each case.

// memRuntime knows no task and streams no event until its subscriber goes.
type memRuntime struct {
	keelruntime.NotImplemented
}

func (memRuntime) State(_ context.Context, id, _ string) (keelruntime.TaskState, error) {
	return keelruntime.TaskState{}, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
}

func (memRuntime) Delete(_ context.Context, id, _ string) (keelruntime.ExitStatus, error) {
	return keelruntime.ExitStatus{}, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
}

func (memRuntime) Events(ctx context.Context) (<-chan keelruntime.Event, <-chan error) {
	events := make(chan keelruntime.Event)
	errs := make(chan error)
	go func() {
		<-ctx.Done()
		close(errs)
		close(events)
	}()
	return events, errs
}

func TestRuntimeSuite(t *testing.T) {
	load.During(t)
	// memRuntime runs no container: only the cases that need none.
	runtimetest.Run(conformance.Go(t), runtimetest.InProcess(func(context.Context, sdk.Env) (keelruntime.Runtime, error) {
		return memRuntime{}, nil
	}), conformance.WithRun(regexp.MustCompile(`^(StateUnknownTask|DeleteUnknownTask|EventsEndWithContext)$`)))
}

func TestRuntimeSuiteCatchesViolations(t *testing.T) {
	load.During(t)
	got := runner.StatusByCase(runner.RunSuite(t.Context(), func(ct conformance.T) {
		runtimetest.Run(ct, runtimetest.InProcess(func(context.Context, sdk.Env) (keelruntime.Runtime, error) {
			return keelruntime.NotImplemented{}, nil
		}))
	}))
	for _, name := range []string{"StateUnknownTask", "DeleteUnknownTask", "EventsEndWithContext"} {
		if got[name] != "fail" {
			t.Errorf("case %s: %q for a runtime that implements nothing, want fail (all: %v)", name, got[name], got)
		}
	}
}
