package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// logDir is where keeld keeps container id's log, in the default
// namespace.
func (k *runKeeld) logDir(id string) string { return filepath.Join(k.env.root, "logs", "default", id) }

// waitStopped waits until container id's task has exited.
func (k *runKeeld) waitStopped(t *testing.T, id string) {
	t.Helper()
	eventually(t, settle, id+" stopped", func() error {
		if r := k.tasks()[id]; r.Status != "stopped" {
			return fmt.Errorf("task %s: %+v", id, r)
		}
		return nil
	})
}

// streamKeel starts a long-running keel command; its stdout comes line by
// line on the returned reader. wait returns its result.
func (k *runKeeld) streamKeel(t *testing.T, args ...string) (lines *bufio.Reader, wait func() result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "keel"), append([]string{"--address", k.env.socket}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(out)
	var rest []byte
	waited := false
	var res result
	wait = func() result {
		if waited {
			return res
		}
		waited = true
		rest, _ = io.ReadAll(br)
		err := cmd.Wait()
		cancel()
		res = result{args: args, stdout: string(rest), stderr: stderr.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			res.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("keel %v: %v", args, err)
		}
		return res
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	return br, wait
}

// readUntil reads lines from br until one equals want, and returns those
// before it.
func readUntil(t *testing.T, br *bufio.Reader, want string) []string {
	t.Helper()
	var before []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading until %q: %v (read %q)", want, err, before)
		}
		if strings.TrimSuffix(l, "\n") == want {
			return before
		}
		before = append(before, l)
	}
}

// checkRun fails unless lines are "<prefix>N" for N from first on, one
// after the other, and returns the last N.
func checkRun(t *testing.T, what string, lines []string, prefix string, first int) int {
	t.Helper()
	n := first - 1
	for i, l := range lines {
		got, err := strconv.Atoi(strings.TrimPrefix(l, prefix))
		if err != nil || !strings.HasPrefix(l, prefix) || got != n+1 {
			t.Fatalf("%s: line %d is %q after %d: lost or repeated lines", what, i, l, n)
		}
		n = got
	}
	return n
}

// TestLogsKeepOutput: the output of a task run with -d, and of an attached
// run, is kept after the task exits and after its delete, and keel logs
// prints it byte for byte, stdout to stdout and stderr to stderr, however
// interleaved, with lines longer than a record and a last line without a
// newline; the log goes with the container.
func TestLogsKeepOutput(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	long := strings.Repeat("x", 20000)
	script := `echo out1; echo err1 >&2; echo out2; head -c 20000 /dev/zero | tr "\0" x; echo; ` +
		`head -c 17000 /dev/zero | tr "\0" x >&2; echo >&2; echo; printf "err no newline" >&2; printf "out no newline"`
	wantOut := "out1\nout2\n" + long + "\n\nout no newline"
	wantErr := "err1\n" + long[:17000] + "\nerr no newline"

	k.ok("run", "-d", k.ref, "bg", "sh", "-c", script)
	k.waitStopped(t, "bg")
	if r := k.keel("logs", "bg"); r.code != 0 || r.stdout != wantOut || r.stderr != wantErr {
		t.Fatalf("keel logs bg: exit %d, stdout %q, stderr %q; want %q, %q", r.code, trim(r.stdout), trim(r.stderr), trim(wantOut), trim(wantErr))
	}
	// Attached, the output streams to the terminal and is kept too.
	r := k.keel("run", k.ref, "fg", "sh", "-c", script)
	if r.code != 0 || r.stdout != wantOut || r.stderr != wantErr {
		t.Fatalf("keel run fg: %v", r)
	}
	if r := k.keel("logs", "fg"); r.stdout != wantOut || r.stderr != wantErr {
		t.Fatalf("keel logs fg after an attached run: %v", r)
	}
	// After the task's delete, until the container's.
	k.ok("task", "rm", "bg")
	if r := k.keel("logs", "bg"); r.stdout != wantOut || r.stderr != wantErr {
		t.Fatalf("keel logs after task rm: %v", r)
	}
	if _, err := os.Stat(k.logDir("bg")); err != nil {
		t.Fatal(err)
	}
	k.ok("container", "rm", "bg")
	if _, err := os.Stat(k.logDir("bg")); !os.IsNotExist(err) {
		t.Errorf("log dir after container rm: %v", err)
	}
	if msg := oneLineError(t, k.keel("logs", "bg")); !strings.Contains(msg, "not found") {
		t.Errorf("logs of a removed container: %q", msg)
	}
	// --log none keeps nothing; logs says so.
	k.ok("run", "--log", "none", k.ref, "quiet", "sh", "-c", "echo hi")
	if msg := oneLineError(t, k.keel("logs", "quiet")); !strings.Contains(msg, "has no log") {
		t.Errorf("logs of a --log none container: %q", msg)
	}
	// A bad --log-opt fails before anything is made.
	if msg := oneLineError(t, k.keel("run", "-d", "--log-opt", "max-size=lots", k.ref, "bad", "true")); !strings.Contains(msg, "max-size") {
		t.Errorf("run with a bad --log-opt: %q", msg)
	}
}

func trim(s string) string {
	if len(s) > 120 {
		return fmt.Sprintf("%s…(%d bytes)…%s", s[:50], len(s), s[len(s)-50:])
	}
	return s
}

// TestLogsRotation: the log is rotated at container_logs' size, keeping
// its files (--log-opt overrides them), with nothing lost or repeated
// between them; logs -f follows across rotations while the task writes
// and ends when it exits.
func TestLogsRotation(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "container_logs {\n  max_size = \"4KiB\"\n  max_files = 3\n}\n")
	for _, tc := range []struct {
		id    string
		opts  []string
		files int
	}{
		{"defaults", nil, 3},
		{"opts", []string{"--log-opt", "max-files=2,max-size=4KiB"}, 2},
	} {
		args := append(append([]string{"run", "-d"}, tc.opts...), k.ref, tc.id, "sh", "-c", `i=1; while [ $i -le 3000 ]; do echo $i; i=$((i+1)); done`)
		k.ok(args...)
		k.waitStopped(t, tc.id)
		entries, err := os.ReadDir(k.logDir(tc.id))
		if err != nil || len(entries) != tc.files {
			t.Errorf("%s: log files %v, %v; want %d", tc.id, entries, err, tc.files)
		}
		for _, e := range entries {
			if fi, err := e.Info(); err != nil || fi.Size() > 4<<10 {
				t.Errorf("%s: %s over 4KiB: %v", tc.id, e.Name(), err)
			}
		}
		out := strings.Split(strings.TrimSuffix(k.ok("logs", tc.id), "\n"), "\n")
		first, _ := strconv.Atoi(out[0])
		if last := checkRun(t, tc.id, out, "", first); last != 3000 || len(out) < (tc.files-1)*60 {
			t.Errorf("%s: kept lines %d to %d", tc.id, first, last)
		}
	}

	// Followed while it writes: 10 files keep all it writes, so what -f
	// prints is checked whole, however the follower is scheduled.
	k.ok("run", "-d", "--log-opt", "max-files=10", k.ref, "follow", "sh", "-c",
		`echo start; while [ ! -e /go ]; do sleep 0.05; done; i=1; while [ $i -le 600 ]; do echo line $i; i=$((i+1)); done; exit 3`)
	br, wait := k.streamKeel(t, "logs", "-f", "follow")
	readUntil(t, br, "start") // the follower is following
	k.ok("task", "exec", "follow", "sh", "-c", ": > /go")
	r := wait()
	if r.code != 0 {
		t.Fatalf("logs -f: %v", r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if last := checkRun(t, "logs -f", lines, "line ", 1); last != 600 {
		t.Errorf("logs -f ended at line %d, want 600", last)
	}
	if files, _ := os.ReadDir(k.logDir("follow")); len(files) < 3 {
		t.Errorf("follow: %d log files, want rotations", len(files))
	}
}

// TestLogsOptions: --tail, --since and --timestamps.
func TestLogsOptions(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	k.ok("run", k.ref, "abc", "sh", "-c", "echo a; echo b; echo c; echo d >&2; printf e")
	// The log's order across streams is the order the shim read them in:
	// the lines' times, which --timestamps prints, tell it.
	r := k.keel("logs", "--timestamps", "abc")
	type line struct {
		at           time.Time
		stream, text string
		partial      bool
	}
	var lines []line
	for _, out := range []struct{ stream, text string }{{"stdout", r.stdout}, {"stderr", r.stderr}} {
		for l := range strings.Lines(out.text) {
			ts, text, _ := strings.Cut(l, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				t.Fatalf("--timestamps line %q: %v", l, err)
			}
			lines = append(lines, line{at, out.stream, strings.TrimSuffix(text, "\n"), !strings.HasSuffix(text, "\n")})
		}
	}
	slices.SortStableFunc(lines, func(a, b line) int { return a.at.Compare(b.at) })
	if len(lines) != 5 {
		t.Fatalf("--timestamps: %v", r)
	}
	render := func(ls []line, stamps bool) (stdout, stderr string) {
		var out = map[string]*strings.Builder{"stdout": {}, "stderr": {}}
		for _, l := range ls {
			if stamps {
				out[l.stream].WriteString(l.at.Format(time.RFC3339Nano) + " ")
			}
			out[l.stream].WriteString(l.text)
			if !l.partial {
				out[l.stream].WriteString("\n")
			}
		}
		return out["stdout"].String(), out["stderr"].String()
	}
	at := func(text string) int {
		return slices.IndexFunc(lines, func(l line) bool { return l.text == text })
	}
	for _, tc := range []struct {
		name  string
		args  []string
		want  []line
		stamp bool
	}{
		{"all", nil, lines, false},
		{"tail 2", []string{"--tail", "2"}, lines[3:], false},
		{"tail 1", []string{"--tail", "1"}, lines[4:], false},
		{"tail 0", []string{"--tail", "0"}, nil, false},
		{"tail more", []string{"--tail", "99"}, lines, false},
		{"since c", []string{"--since", lines[at("c")].at.Format(time.RFC3339Nano)}, lines[at("c"):], false},
		{"since an hour", []string{"--since", "1h"}, lines, false},
		{"since later", []string{"--since", time.Now().Add(time.Minute).Format(time.RFC3339)}, nil, false},
		{"timestamps", []string{"--timestamps"}, lines, true},
		{"timestamps tail 1", []string{"--timestamps", "--tail", "1"}, lines[4:], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr := render(tc.want, tc.stamp)
			r := k.keel(append([]string{"logs"}, append(tc.args, "abc")...)...)
			if r.code != 0 || r.stdout != stdout || r.stderr != stderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q (%v)", r.stdout, r.stderr, stdout, stderr, r)
			}
		})
	}
	if msg := oneLineError(t, k.keel("logs", "--since", "someday", "abc")); !strings.Contains(msg, "--since") {
		t.Errorf("a bad --since: %q", msg)
	}
}

// TestAttachDetached: attach to a task run with -d prints its output from
// then on, until it exits, and exits with its code.
func TestAttachDetached(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	k.ok("run", "-d", k.ref, "bg", "sh", "-c",
		`echo before; i=0; while [ ! -e /go ]; do echo tick $i; i=$((i+1)); sleep 0.05; done; echo after >&2; echo bye; exit 5`)
	eventually(t, settle, "bg's first line", func() error {
		if out := k.ok("logs", "bg"); !strings.HasPrefix(out, "before\n") {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	br, wait := k.streamKeel(t, "task", "attach", "bg")
	l, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "tick ") {
		t.Fatalf("attach's first line %q, %v; want a tick", l, err)
	}
	k.ok("task", "exec", "bg", "sh", "-c", ": > /go")
	r := wait()
	if r.code != 5 || !strings.HasSuffix(r.stdout, "bye\n") || strings.Contains(r.stdout, "before") || r.stderr != "after\n" {
		t.Errorf("attach: %v", r)
	}
}

// TestLogsSurviveRestarts: the shim writes the log while keeld and the
// runtime plugin are killed and restarted; nothing written meanwhile is
// lost, and logs serves it all after.
func TestLogsSurviveRestarts(t *testing.T) {
	k := startRunKeeld(t, "")
	k.ok("run", "-d", k.ref, "w", "sh", "-c",
		`i=1; while [ ! -e /stop ]; do echo $i; i=$((i+1)); sleep 0.01; done; echo $i; exit 0`)
	size := func() int64 {
		fi, err := os.Stat(filepath.Join(k.logDir("w"), "container.log"))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	grows := func(what string) {
		t.Helper()
		from := size()
		eventually(t, settle, "the log grows "+what, func() error {
			if size() <= from {
				return fmt.Errorf("still %d bytes", from)
			}
			return nil
		})
	}
	grows("at first")
	plug := k.plugins()["runtime.runc"]
	if err := syscall.Kill(plug.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	grows("with the runtime plugin killed")
	k.kill()
	grows("with keeld killed")
	k = k.restart(t)
	grows("after keeld's restart")
	k.ok("task", "exec", "w", "sh", "-c", ": > /stop")
	k.waitStopped(t, "w")
	lines := strings.Split(strings.TrimSuffix(k.ok("logs", "w"), "\n"), "\n")
	if last := checkRun(t, "logs after restarts", lines, "", 1); last < 10 {
		t.Errorf("only %d lines", last)
	}
}

// TestAttachStdin: a task created with a stdin keeld keeps (the -d -i
// case) reads what writer after writer sends: the client library's
// WriteStdin, then attach's stdin; neither's end closes it.
func TestAttachStdin(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	k.ok("container", "create", k.ref, "in", "sh", "-c", "read a; echo got $a; read b; echo got $b >&2; exit 4")
	c := k.client(t, "default")
	ctx := t.Context()
	ct, err := c.LoadContainer(ctx, "in")
	if err != nil {
		t.Fatal(err)
	}
	task, err := ct.NewTask(ctx, cio.KeepStdin(cio.ContainerLog(cio.Log{})))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := task.WriteStdin(ctx, strings.NewReader("one\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, settle, "the first line read", func() error {
		if out := k.ok("logs", "in"); out != "got one\n" {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
	r := k.keelIn(strings.NewReader("two\n"), "task", "attach", "in")
	if r.code != 4 || r.stdout != "" || r.stderr != "got two\n" {
		t.Errorf("attach with stdin: %v", r)
	}
	// The CLI's run -d -i: attach sends its stdin.
	k.ok("run", "-d", "-i", k.ref, "cli", "sh", "-c", "read a; echo got $a; exit 6")
	if r := k.keelIn(strings.NewReader("hi\n"), "task", "attach", "cli"); r.code != 6 || r.stdout != "got hi\n" {
		t.Errorf("attach to run -d -i: %v", r)
	}
	// A task without a kept stdin refuses a write.
	k.ok("run", "-d", k.ref, "plain", "/bin/busybox", "sleep", "1000")
	plain, err := c.LoadContainer(ctx, "plain")
	if err != nil {
		t.Fatal(err)
	}
	pt, err := plain.Task(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pt.WriteStdin(ctx, strings.NewReader("x\n")); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("WriteStdin to a task without a kept stdin: %v, want FailedPrecondition", err)
	}
}
