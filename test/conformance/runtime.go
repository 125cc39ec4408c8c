package conformance

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

var _ = addCLISuite(sdk.KindRuntime, func(t T, path string, opts ...Option) {
	Runtime(t, BinaryRuntime(path, opts...), opts...)
})

// BinaryRuntime opens the runtime plugin executable at path as keeld does
// (see Binary).
func BinaryRuntime(path string, opts ...Option) Opener[keelruntime.Runtime] {
	return Binary(path, sdk.KindRuntime, wrapRuntime, opts...)
}

// InProcessRuntime opens the runtime factory builds inside the test
// process, across gRPC (see InProcess).
func InProcessRuntime(factory keelruntime.Factory, opts ...Option) Opener[keelruntime.Runtime] {
	return InProcess(keelruntime.Plugin("conformance", "dev", factory), wrapRuntime, opts...)
}

func wrapRuntime(conn grpc.ClientConnInterface, stop func() error) keelruntime.Runtime {
	return &stoppingRuntime{Runtime: keelruntime.NewClient(conn), stop: stop}
}

// stoppingRuntime is the sdk client whose Close ends the plugin.
type stoppingRuntime struct {
	keelruntime.Runtime
	stop func() error
}

var _ keelruntime.Runtime = (*stoppingRuntime)(nil)

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

// Runtime runs the runtime suite against the plugins open opens.
//
// The first cases hold for any runtime without running a container; the
// others run busybox containers (see BusyboxRootfs and RuntimeSpec) and
// need root: create, start, wait and exit codes, signals, kill all, exec
// with and without a terminal, stdin close, pause and resume, pids, a
// memory limit update, stats, an OOM kill, two tasks at once, a restart of
// the plugin mid-task, and the order of the events of each.
func Runtime(t T, open Opener[keelruntime.Runtime], opts ...Option) {
	t.Helper()
	runCases(t, append(runtimeCases(), runtimeTaskCases()...), open, buildOptions(opts))
}

func runtimeCases() []testCase[keelruntime.Runtime] {
	return []testCase[keelruntime.Runtime]{
		{name: "StateUnknownTask", body: func(ctx context.Context, t T, env *caseEnv[keelruntime.Runtime]) {
			if _, err := env.P.State(ctx, "conformance-no-such-task", ""); !errdefs.IsNotFound(err) {
				t.Errorf("State of an unknown task: %v, want NotFound", err)
			}
		}},
		{name: "DeleteUnknownTask", body: func(ctx context.Context, t T, env *caseEnv[keelruntime.Runtime]) {
			if _, err := env.P.Delete(ctx, "conformance-no-such-task", ""); !errdefs.IsNotFound(err) {
				t.Errorf("Delete of an unknown task: %v, want NotFound", err)
			}
		}},
		{name: "EventsEndWithContext", body: func(ctx context.Context, t T, env *caseEnv[keelruntime.Runtime]) {
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
