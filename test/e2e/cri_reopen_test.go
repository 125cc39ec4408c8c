package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/sdk/crilog"
)

// TestCRIReopenContainerLog rotates a container's log as the kubelet does,
// several times while the container writes a numbered line every few
// milliseconds: rename log_path away, then ReopenContainerLog. The rotated
// files and the current one hold every number exactly once, in order in
// each file and from file to file, each line a whole CRI record, up to the
// last words the container wrote when stopped.
func TestCRIReopenContainerLog(t *testing.T) {
	t.Parallel()
	_, rs, _, ref := startCRIBusybox(t)
	ctx := t.Context()
	pod, podCfg := criPod(t, rs, "rotate")

	// An unknown container, and one created but not started.
	if _, err := rs.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: "no-such-container"}); status.Code(err) != codes.NotFound {
		t.Errorf("ReopenContainerLog of an unknown container: %v, want NotFound", err)
	}
	created, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg,
		Config: boxConfig(ref, "idle", "sleep 60")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: created.ContainerId}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "not running") {
		t.Errorf("ReopenContainerLog of a container not started: %v, want FailedPrecondition, not running", err)
	}

	// On SIGTERM it writes its last number again as "end N", so a lost
	// tail shows.
	id := criContainer(t, rs, pod, podCfg, boxConfig(ref, "counter",
		`i=0; trap 'echo "end $i"; exit 0' TERM; while :; do i=$((i+1)); echo "line $i"; sleep 0.005; done`))
	path := filepath.Join(podCfg.LogDirectory, "counter", "0.log")

	// Rotations, and the records each file has at least.
	const rotations, minPerFile = 5, 50
	var files []string
	for n := range rotations {
		// The current file has records before each rotation, so every
		// reopen happens while the container writes.
		eventually(t, settle, "records in the current log", func() error {
			if recs := readRecords(t, path, false); len(recs) < minPerFile {
				return fmt.Errorf("%d records", len(recs))
			}
			return nil
		})
		// The kubelet's name for a rotated log: log_path.<time>.
		rotated := path + time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC).Format(".20060102-150405")
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		files = append(files, rotated)
		if _, err := rs.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
			t.Fatalf("reopen %d: %v", n, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("no new log at log_path after the reopen: %v", err)
		}
	}
	eventually(t, settle, "records after the last reopen", func() error {
		if recs := readRecords(t, path, false); len(recs) < minPerFile {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	if st := waitExited(t, rs, id); st.ExitCode != 0 {
		t.Errorf("counter exited %d, want 0 (its TERM trap)", st.ExitCode)
	}
	if _, err := rs.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ReopenContainerLog of an exited container: %v, want FailedPrecondition", err)
	}

	files = append(files, path)
	next, end := 1, -1
	for _, file := range files {
		recs := readRecords(t, file, true)
		if len(recs) == 0 {
			t.Errorf("%s: no record", filepath.Base(file))
		}
		for _, r := range recs {
			line := string(r.Content)
			if r.Stream != crilog.Stdout || r.Partial {
				t.Fatalf("%s: record %+v, want whole stdout lines", filepath.Base(file), r)
			}
			if end >= 0 {
				t.Fatalf("%s: %q after the last words", filepath.Base(file), line)
			}
			if s, ok := strings.CutPrefix(line, "end "); ok {
				if end, err = strconv.Atoi(s); err != nil || end != next-1 {
					t.Fatalf("%s: %q, want end %d (the last line written)", filepath.Base(file), line, next-1)
				}
				continue
			}
			if line != "line "+strconv.Itoa(next) {
				t.Fatalf("%s: %q, want %q (lost, repeated or out of order)", filepath.Base(file), line, "line "+strconv.Itoa(next))
			}
			next++
		}
	}
	if end < 0 {
		t.Errorf("the counter's last words are in no file (lines 1 to %d are)", next-1)
	}
	t.Logf("%d lines across %d files", next-1, len(files))
}

// TestTaskReopenLog: keel task reopen-log, for any embedder's task with a
// log: renamed away and reopened, the log holds what came before and a
// new file at its path what comes after; a task without a log says so.
func TestTaskReopenLog(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	k.ok("run", "-d", "--log", "none", k.ref, "quiet", "sh", "-c", "while :; do sleep 1; done")
	if msg := oneLineError(t, k.keel("task", "reopen-log", "quiet")); !strings.Contains(msg, "has no log file") {
		t.Errorf("reopen-log of a task without a log: %q, want it said", msg)
	}
	k.ok("task", "kill", "-s", "KILL", "quiet")

	k.ok("run", "-d", k.ref, "bg", "sh", "-c", `echo before; while [ ! -e /go ]; do sleep 0.05; done; echo after`)
	path := filepath.Join(k.logDir("bg"), "container.log")
	eventually(t, settle, "the first line in the log", func() error {
		if recs := readRecords(t, path, false); len(recs) != 1 {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	k.ok("task", "reopen-log", "bg")
	k.ok("task", "exec", "bg", "sh", "-c", ": > /go")
	k.waitStopped(t, "bg")
	for file, want := range map[string]string{path + ".old": "before", path: "after"} {
		if recs := readRecords(t, file, true); len(recs) != 1 || string(recs[0].Content) != want {
			t.Errorf("%s: records %+v, want one %q", filepath.Base(file), recs, want)
		}
	}
}

// readRecords parses every line of the one log file path, failing on any
// that is not a CRI record; a last line without its newline is one being
// written, or with done, a record torn.
func readRecords(t *testing.T, path string, done bool) []crilog.Record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []crilog.Record
	for line := range bytes.Lines(b) {
		if !bytes.HasSuffix(line, []byte("\n")) {
			if done {
				t.Fatalf("%s ends within a record: %q", filepath.Base(path), line)
			}
			break
		}
		r, err := crilog.ParseRecord(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			t.Fatalf("%s: %q: %v", filepath.Base(path), line, err)
		}
		recs = append(recs, r)
	}
	return recs
}
