package runtimetest

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// Binary opens the runtime plugin executable at path as keeld does
// (see conformance.Binary).
func Binary(path string, opts ...conformance.Option) conformance.Opener[keelruntime.Runtime] {
	return conformance.Binary(path, sdk.KindRuntime, wrapRuntime, opts...)
}

// InProcess opens the runtime factory builds inside the test
// process, across gRPC (see conformance.InProcess).
func InProcess(factory keelruntime.Factory, opts ...conformance.Option) conformance.Opener[keelruntime.Runtime] {
	return conformance.InProcess(keelruntime.Plugin("conformance", "dev", factory), wrapRuntime, opts...)
}

func wrapRuntime(conn grpc.ClientConnInterface, _ string, stop func() error) keelruntime.Runtime {
	return &stoppingRuntime{Runtime: keelruntime.NewClient(conn), stop: stop}
}

// stoppingRuntime is the sdk client whose Close ends the plugin.
type stoppingRuntime struct {
	keelruntime.Runtime
	stop func() error
}

var (
	_ keelruntime.Runtime     = (*stoppingRuntime)(nil)
	_ keelruntime.LogReopener = (*stoppingRuntime)(nil)
)

// ReopenLog reaches the client's (every sdk client has it; the plugin
// answers NotImplemented when it has not).
func (r *stoppingRuntime) ReopenLog(ctx context.Context, id string) error {
	return keelruntime.ReopenLog(ctx, r.Runtime, id)
}

func (r *stoppingRuntime) Close() error {
	err := r.Runtime.Close()
	if serr := r.stop(); err == nil {
		err = serr
	}
	return err
}

// eventsWait bounds how long an events stream may take to open or to end.
const eventsWait = 10 * time.Second

// failFastWait is how long a runtime that cannot do something at all
// (stream events) may take to say so: generous, so that a loaded machine's
// slow answer is not taken for a working one.
const failFastWait = 2 * time.Second

// Run runs the runtime suite against the plugins open opens.
//
// The first cases hold for any runtime without running a container; the
// others run busybox containers (see fixture.BusyboxRootfs and fixture.RuntimeSpec) and
// need root: create, start, wait and exit codes, signals, kill all, exec
// with and without a terminal, stdin close, pause and resume, pids, a
// memory limit update, stats, an OOM kill, two tasks at once, a restart of
// the plugin mid-task, and the order of the events of each.
func Run(t conformance.T, open conformance.Opener[keelruntime.Runtime], opts ...conformance.Option) {
	t.Helper()
	conformance.RunCases(t, append(runtimeCases(), runtimeTaskCases()...), open, conformance.NewOptions(opts))
}

func runtimeCases() []conformance.Case[keelruntime.Runtime] {
	return []conformance.Case[keelruntime.Runtime]{
		{Name: "StateUnknownTask", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			if _, err := env.P.State(ctx, "conformance-no-such-task", ""); !errdefs.IsNotFound(err) {
				t.Errorf("State of an unknown task: %v, want NotFound", err)
			}
		}},
		{Name: "DeleteUnknownTask", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			if _, err := env.P.Delete(ctx, "conformance-no-such-task", ""); !errdefs.IsNotFound(err) {
				t.Errorf("Delete of an unknown task: %v, want NotFound", err)
			}
		}},
		{Name: "EventsEndWithContext", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			events, errs := env.P.Events(ctx)
			// A runtime that cannot stream events fails at once; give it
			// the time to say so, on a loaded machine too: once the
			// context is cancelled, its error no longer reaches here.
			select {
			case err := <-errs:
				if err != nil {
					t.Fatalf("events stream failed: %v", err)
				}
				t.Fatalf("events stream ended before its context")
			case <-time.After(failFastWait):
			}
			cancel()
			deadline := time.After(eventsWait)
			for {
				select {
				case _, ok := <-events:
					if !ok {
						if err := <-errs; err != nil {
							t.Errorf("events stream ended by its context: %v, want no error", err)
						}
						return
					}
				case <-deadline:
					t.Fatalf("events stream still open %s after its context ended", eventsWait)
				}
			}
		}},
	}
}
