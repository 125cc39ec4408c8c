package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/crilog"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// reopenLogCase: the kubelet's log rotation. The log is renamed away
// while the task runs, ReopenLog starts a new file at its path, and what
// the task writes next goes there: each file holds its records.
var reopenLogCase = taskCase{
	Name:  "ReopenLog",
	Needs: []string{keelruntime.CapabilityCRILog, keelruntime.CapabilityReopenLog},
	Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
		e := newTaskEnv(t, env)
		if err := keelruntime.ReopenLog(ctx, e.rt(), "conformance-no-such-task"); !errdefs.IsNotFound(err) {
			t.Errorf("ReopenLog of an unknown task: %v, want NotFound", err)
		}
		e.create(ctx, "nolog", fixture.RuntimeSpec("true"))
		if err := keelruntime.ReopenLog(ctx, e.rt(), "nolog"); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("ReopenLog of a task without a log: %v, want FailedPrecondition", err)
		}

		log := e.path("0.log")
		e.create(ctx, "reopen", fixture.RuntimeSpec("sh", "-c",
			`echo before; echo before-err >&2; while [ ! -e /go ]; do sleep 0.05; done; echo after; echo after-err >&2`),
			func(o *keelruntime.CreateOpts) { o.IO.LogPath, o.IO.LogMaxFiles = log, 1 })
		if _, err := e.rt().Start(ctx, "reopen", ""); err != nil {
			t.Fatalf("start: %v", err)
		}
		before := []string{"stdout before", "stderr before-err"}
		waitLog(t, log, before)
		rotated := log + ".20260101-000000"
		if err := os.Rename(log, rotated); err != nil {
			t.Fatalf("%v", err)
		}
		if err := keelruntime.ReopenLog(ctx, e.rt(), "reopen"); err != nil {
			t.Fatalf("reopen log: %v", err)
		}
		if _, err := os.Stat(log); err != nil {
			t.Errorf("no new log at the path after ReopenLog: %v", err)
		}
		if err := os.WriteFile(filepath.Join(e.path("reopen-rootfs"), "go"), nil, 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		// The exit is reported once the output is in the log.
		e.wait(ctx, "reopen", "")
		for file, want := range map[string][]string{rotated: before, log: {"stdout after", "stderr after-err"}} {
			if got := logRecords(t, file); !sameRecords(got, want) {
				t.Errorf("%s: records %q, want %q", filepath.Base(file), got, want)
			}
		}
	},
}

// logRecords are the records of the one log file path as "stream content".
func logRecords(t conformance.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	defer f.Close()
	var out []string
	s := crilog.NewScanner(f)
	for {
		r, ok, err := s.Next()
		if err != nil {
			t.Fatalf("read the log: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, r.Stream+" "+string(r.Content))
	}
}

// sameRecords compares records regardless of how stdout's and stderr's
// interleave.
func sameRecords(got, want []string) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

// waitLog waits until the log at path holds the records want.
func waitLog(t conformance.T, path string, want []string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(taskWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			if got = logRecords(t, path); sameRecords(got, want) {
				return
			}
		}
	}
	t.Fatalf("log %s: records %s, want %s", path, strings.Join(got, ", "), strings.Join(want, ", "))
}
