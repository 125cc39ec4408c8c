package runtimetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cgroupv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/crilog"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// taskWait bounds how long a case waits for a container to do something.
const taskWait = 20 * time.Second

// taskEnv is a case's view of the runtime: the tasks it made are killed
// and deleted when the case ends, whatever happened.
type taskEnv struct {
	t   conformance.T
	env *conformance.Env[keelruntime.Runtime]
	dir string
	// cgroup is the case's own cgroup parent: cases run in parallel, each
	// with its own runtime, and may reuse task ids.
	cgroup string

	mu  sync.Mutex
	ids []string
}

func newTaskEnv(t conformance.T, env *conformance.Env[keelruntime.Runtime]) *taskEnv {
	t.Helper()
	testkit.RequireRoot(t, "mount")
	if _, err := os.Stat(fixture.BusyboxPath); err != nil {
		if _, lerr := exec.LookPath("busybox"); lerr != nil {
			testkit.SkipOrFail(t, "needs a static busybox (busybox-static) to build a rootfs")
		}
	}
	dir := t.TempDir()
	return &taskEnv{t: t, env: env, dir: dir, cgroup: fmt.Sprintf("/keel-conformance/%x", sha256.Sum256([]byte(dir)))[:34]}
}

// reopen restarts the plugin; the tasks are removed through the new
// instance when the case ends, before it is closed.
func (e *taskEnv) reopen(ctx context.Context) {
	e.t.Helper()
	if _, err := e.env.Reopen(ctx, e.t); err != nil {
		e.t.Fatalf("reopen: %v", err)
	}
	e.mu.Lock()
	ids := append([]string(nil), e.ids...)
	e.mu.Unlock()
	e.t.Cleanup(func() {
		for _, id := range ids {
			e.remove(id)
		}
	})
}

func (e *taskEnv) rt() keelruntime.Runtime { return e.env.P }

// path names a file in the case's scratch dir.
func (e *taskEnv) path(name string) string { return filepath.Join(e.dir, name) }

// create makes a task running args in a fresh busybox rootfs, with stdout
// and stderr to files (read them with output), and deletes it at the end.
func (e *taskEnv) create(ctx context.Context, id string, spec *specs.Spec, edit ...func(*keelruntime.CreateOpts)) uint32 {
	e.t.Helper()
	rootfs := e.path(id + "-rootfs")
	mounts, err := fixture.BusyboxRootfs(rootfs)
	if err != nil {
		e.t.Fatalf("build busybox rootfs: %v", err)
	}
	opts := keelruntime.CreateOpts{
		ID: id, Spec: spec, Rootfs: mounts,
		IO: keelruntime.IO{Stdout: e.path(id + ".out"), Stderr: e.path(id + ".err")},
	}
	for _, f := range edit {
		f(&opts)
	}
	if spec.Linux != nil && spec.Linux.CgroupsPath == "" {
		spec.Linux.CgroupsPath = e.cgroup + "/" + id
	}
	pid, err := e.rt().Create(ctx, opts)
	if err != nil {
		e.t.Fatalf("create task %s: %v", id, err)
	}
	e.mu.Lock()
	e.ids = append(e.ids, id)
	e.mu.Unlock()
	e.t.Cleanup(func() { e.remove(id) })
	return pid
}

// remove kills and deletes a task, if the case has not.
func (e *taskEnv) remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), taskWait)
	defer cancel()
	rt := e.rt()
	if _, err := rt.State(ctx, id, ""); err != nil {
		// Gone, or the instance it was made on is closed (a later one
		// removes it).
		return
	}
	rt.Kill(ctx, id, "", syscall.SIGKILL, true)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	rt.Wait(wctx, id, "")
	wcancel()
	if _, err := rt.Delete(ctx, id, ""); err != nil && !errdefs.IsNotFound(err) {
		e.t.Errorf("cleanup: delete task %s: %v", id, err)
	}
}

func (e *taskEnv) run(ctx context.Context, id string, args ...string) uint32 {
	e.t.Helper()
	e.create(ctx, id, fixture.RuntimeSpec(args...))
	pid, err := e.rt().Start(ctx, id, "")
	if err != nil {
		e.t.Fatalf("start task %s: %v", id, err)
	}
	return pid
}

func (e *taskEnv) wait(ctx context.Context, id, execID string) keelruntime.ExitStatus {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, taskWait)
	defer cancel()
	st, err := e.rt().Wait(ctx, id, execID)
	if err != nil {
		e.t.Fatalf("wait for %s/%s: %v", id, execID, err)
	}
	return st
}

func (e *taskEnv) output(name string) string {
	b, _ := os.ReadFile(e.path(name))
	return string(b)
}

// status polls State until the process reaches want.
func (e *taskEnv) status(ctx context.Context, id string, want keelruntime.Status) {
	e.t.Helper()
	deadline := time.Now().Add(taskWait)
	var st keelruntime.TaskState
	var err error
	for time.Now().Before(deadline) {
		if st, err = e.rt().State(ctx, id, ""); err == nil && st.Status == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("task %s: state %v (%v), want %v", id, st.Status, err, want)
}

// eventLog keeps the events of a subscription.
type eventLog struct {
	mu     sync.Mutex
	events []keelruntime.Event
	wake   chan struct{}
}

func recordEvents(ctx context.Context, t conformance.T, rt keelruntime.Runtime) *eventLog {
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	r := &eventLog{wake: make(chan struct{}, 1)}
	events, _ := rt.Events(ctx)
	go func() {
		for ev := range events {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// of returns the events of task id (and exec execID, "*" for all).
func (r *eventLog) of(id, execID string) []keelruntime.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []keelruntime.Event
	for _, ev := range r.events {
		if ev.ID == id && (execID == "*" || ev.ExecID == execID) {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until task id has an event on topic.
func (r *eventLog) waitFor(t conformance.T, id, execID, topic string) keelruntime.Event {
	t.Helper()
	deadline := time.After(taskWait)
	for {
		for _, ev := range r.of(id, execID) {
			if ev.Topic == topic {
				return ev
			}
		}
		select {
		case <-r.wake:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s event for %s/%s in %s; got %v", topic, id, execID, taskWait, topics(r.of(id, "*")))
		}
	}
}

func topics(evs []keelruntime.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Topic
		if ev.ExecID != "" {
			out[i] += "(" + ev.ExecID + ")"
		}
	}
	return out
}

// checkOrder checks that the events of id/execID, restricted to want's
// topics, are exactly want in order.
func (r *eventLog) checkOrder(t conformance.T, id, execID string, want ...string) {
	t.Helper()
	var got []string
	for _, ev := range r.of(id, execID) {
		if slices.Contains(want, ev.Topic) {
			got = append(got, ev.Topic)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("events of %s/%s: %v, want %v", id, execID, got, want)
	}
}

func processSpec(args ...string) *specs.Process {
	return fixture.RuntimeSpec(args...).Process
}

// memoryLimit reads the memory limit from a task's stats.
func memoryLimit(t conformance.T, st keelruntime.Stats) uint64 {
	t.Helper()
	switch {
	case strings.HasSuffix(st.TypeURL, "cgroups.v1.Metrics"):
		var m cgroupv1.Metrics
		if err := proto.Unmarshal(st.Data, &m); err != nil {
			t.Fatalf("decode %s: %v", st.TypeURL, err)
		}
		return m.GetMemory().GetUsage().GetLimit()
	case strings.HasSuffix(st.TypeURL, "cgroups.v2.Metrics"):
		var m cgroupv2.Metrics
		if err := proto.Unmarshal(st.Data, &m); err != nil {
			t.Fatalf("decode %s: %v", st.TypeURL, err)
		}
		return m.GetMemory().GetUsageLimit()
	}
	t.Fatalf("stats of unknown type %q", st.TypeURL)
	return 0
}

func mkfifo(t conformance.T, path string) {
	t.Helper()
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo %s: %v", path, err)
	}
}

type taskCase = conformance.Case[keelruntime.Runtime]

func runtimeTaskCases() []taskCase {
	return []taskCase{
		{Name: "ExitCodes", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			for _, code := range []uint32{0, 3, 255} {
				id := fmt.Sprintf("exit-%d", code)
				e.run(ctx, id, "sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2; exit %d", code, code, code))
				if st := e.wait(ctx, id, ""); st.Status != code || st.ExitedAt.IsZero() {
					t.Errorf("task %s: exit %d at %v, want %d at a time", id, st.Status, st.ExitedAt, code)
				}
				st, err := e.rt().State(ctx, id, "")
				if err != nil || st.Status != keelruntime.StatusStopped || st.ExitStatus != code {
					t.Errorf("state of exited %s: %+v, %v; want stopped with %d", id, st, err, code)
				}
				del, err := e.rt().Delete(ctx, id, "")
				if err != nil || del.Status != code {
					t.Errorf("delete %s: %+v, %v; want exit %d", id, del, err, code)
				}
				if _, err := e.rt().State(ctx, id, ""); !errdefs.IsNotFound(err) {
					t.Errorf("state of deleted %s: %v, want NotFound", id, err)
				}
				if got, want := e.output(id+".out"), fmt.Sprintf("out-%d\n", code); got != want {
					t.Errorf("stdout of %s: %q, want %q", id, got, want)
				}
				if got, want := e.output(id+".err"), fmt.Sprintf("err-%d\n", code); got != want {
					t.Errorf("stderr of %s: %q, want %q", id, got, want)
				}
			}
		}},
		{Name: "LifecycleErrors", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.create(ctx, "dup", fixture.RuntimeSpec("sleep", "60"))
			if _, err := e.rt().Create(ctx, keelruntime.CreateOpts{ID: "dup", Spec: fixture.RuntimeSpec("true")}); !errdefs.IsAlreadyExists(err) {
				t.Errorf("create with an id in use: %v, want AlreadyExists", err)
			}
			if st, err := e.rt().State(ctx, "dup", ""); err != nil || st.Status != keelruntime.StatusCreated || st.Pid == 0 {
				t.Errorf("state of a created task: %+v, %v; want created with a pid", st, err)
			}
			if _, err := e.rt().Start(ctx, "dup", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			if _, err := e.rt().Start(ctx, "dup", ""); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("start of a running task: %v, want FailedPrecondition", err)
			}
			if _, err := e.rt().Delete(ctx, "dup", ""); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("delete of a running task: %v, want FailedPrecondition", err)
			}
			if _, err := e.rt().Create(ctx, keelruntime.CreateOpts{ID: "bad/id", Spec: fixture.RuntimeSpec("true")}); !errdefs.IsInvalidArgument(err) {
				t.Errorf("create with id bad/id: %v, want InvalidArgument", err)
			}
			if err := e.rt().Exec(ctx, keelruntime.ExecOpts{ID: "nope", ExecID: "x", Spec: processSpec("true")}); !errdefs.IsNotFound(err) {
				t.Errorf("exec in an unknown task: %v, want NotFound", err)
			}
			// A created task deletes without ever running.
			e.create(ctx, "never", fixture.RuntimeSpec("true"))
			if _, err := e.rt().Delete(ctx, "never", ""); err != nil {
				t.Errorf("delete of a created task: %v", err)
			}
		}},
		{Name: "Signals", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "trap", "sh", "-c", `trap "exit 42" TERM; echo ready; while true; do sleep 0.05; done`)
			e.run(ctx, "kill", "sleep", "60")
			waitOutput(t, e, "trap.out", "ready")
			if err := e.rt().Kill(ctx, "trap", "", syscall.SIGTERM, false); err != nil {
				t.Fatalf("kill TERM: %v", err)
			}
			if st := e.wait(ctx, "trap", ""); st.Status != 42 {
				t.Errorf("trapped TERM: exit %d, want 42", st.Status)
			}
			if err := e.rt().Kill(ctx, "kill", "", syscall.SIGKILL, false); err != nil {
				t.Fatalf("kill KILL: %v", err)
			}
			if st := e.wait(ctx, "kill", ""); st.Status != 128+9 {
				t.Errorf("killed: exit %d, want 137", st.Status)
			}
			if err := e.rt().Kill(ctx, "kill", "", syscall.SIGKILL, false); !errdefs.IsNotFound(err) {
				t.Errorf("kill of an exited task: %v, want NotFound", err)
			}
		}},
		{Name: "KillAll", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			spec := fixture.RuntimeSpec("sh", "-c", "sleep 60 & sleep 60 & echo ready; wait")
			e.create(ctx, "all", spec)
			if _, err := e.rt().Start(ctx, "all", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			waitOutput(t, e, "all.out", "ready")
			ps, err := e.rt().Pids(ctx, "all")
			if err != nil || len(ps) < 3 {
				t.Fatalf("pids: %v, %v; want 3 or more", ps, err)
			}
			if err := e.rt().Kill(ctx, "all", "", syscall.SIGKILL, true); err != nil {
				t.Fatalf("kill all: %v", err)
			}
			if st := e.wait(ctx, "all", ""); st.Status != 137 {
				t.Errorf("exit after kill all: %d, want 137", st.Status)
			}
		}},
		{Name: "Exec", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			rec := recordEvents(ctx, t, e.rt())
			e.run(ctx, "box", "sleep", "60")
			io := keelruntime.IO{Stdout: e.path("exec.out"), Stderr: e.path("exec.err")}
			if err := e.rt().Exec(ctx, keelruntime.ExecOpts{ID: "box", ExecID: "x1", Spec: processSpec("sh", "-c", "echo from-exec; exit 5"), IO: io}); err != nil {
				t.Fatalf("exec: %v", err)
			}
			if err := e.rt().Exec(ctx, keelruntime.ExecOpts{ID: "box", ExecID: "x1", Spec: processSpec("true")}); !errdefs.IsAlreadyExists(err) {
				t.Errorf("exec with an exec id in use: %v, want AlreadyExists", err)
			}
			if st, err := e.rt().State(ctx, "box", "x1"); err != nil || st.Status != keelruntime.StatusCreated {
				t.Errorf("state of an added exec: %+v, %v; want created", st, err)
			}
			pid, err := e.rt().Start(ctx, "box", "x1")
			if err != nil || pid == 0 {
				t.Fatalf("start exec: %d, %v", pid, err)
			}
			if st := e.wait(ctx, "box", "x1"); st.Status != 5 {
				t.Errorf("exec exit %d, want 5", st.Status)
			}
			if got := e.output("exec.out"); got != "from-exec\n" {
				t.Errorf("exec stdout %q, want %q", got, "from-exec\n")
			}
			if st, err := e.rt().Delete(ctx, "box", "x1"); err != nil || st.Status != 5 {
				t.Errorf("delete exec: %+v, %v; want exit 5", st, err)
			}
			if _, err := e.rt().State(ctx, "box", "x1"); !errdefs.IsNotFound(err) {
				t.Errorf("state of a deleted exec: %v, want NotFound", err)
			}
			rec.waitFor(t, "box", "x1", keelruntime.TopicExit)
			rec.checkOrder(t, "box", "x1", keelruntime.TopicExecAdded, keelruntime.TopicExecStarted, keelruntime.TopicExit)
			// The task runs on.
			if st, err := e.rt().State(ctx, "box", ""); err != nil || st.Status != keelruntime.StatusRunning {
				t.Errorf("task after its exec: %+v, %v; want running", st, err)
			}
		}},
		{Name: "ExecTerminal", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "box", "sleep", "60")
			io := keelruntime.IO{Stdout: e.path("tty.out"), Terminal: true}
			spec := processSpec("sh", "-c", "tty; sleep 0.5; stty size")
			spec.Terminal = true
			if err := e.rt().Exec(ctx, keelruntime.ExecOpts{ID: "box", ExecID: "tty", Spec: spec, IO: io}); err != nil {
				t.Fatalf("exec: %v", err)
			}
			if _, err := e.rt().Start(ctx, "box", "tty"); err != nil {
				t.Fatalf("start exec: %v", err)
			}
			if err := e.rt().ResizePty(ctx, "box", "tty", 100, 40); err != nil {
				t.Errorf("resize: %v", err)
			}
			if st := e.wait(ctx, "box", "tty"); st.Status != 0 {
				t.Errorf("exec exit %d, want 0", st.Status)
			}
			out := e.output("tty.out")
			if !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "40 100") {
				t.Errorf("terminal output %q, want a /dev/pts tty sized 40 100", out)
			}
			if err := e.rt().ResizePty(ctx, "box", "", 80, 24); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("resize of a process without a terminal: %v, want FailedPrecondition", err)
			}
		}},
		{Name: "TaskTerminal", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			spec := fixture.RuntimeSpec("sh", "-c", "tty; exit 4")
			spec.Process.Terminal = true
			e.create(ctx, "tty", spec, func(o *keelruntime.CreateOpts) {
				o.IO = keelruntime.IO{Stdout: e.path("tty.out"), Terminal: true}
			})
			if _, err := e.rt().Start(ctx, "tty", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			if st := e.wait(ctx, "tty", ""); st.Status != 4 {
				t.Errorf("exit %d, want 4", st.Status)
			}
			if out := e.output("tty.out"); !strings.Contains(out, "/dev/pts/") {
				t.Errorf("terminal output %q, want a /dev/pts tty", out)
			}
		}},
		{Name: "StdinClose", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			fifo := e.path("stdin")
			mkfifo(t, fifo)
			e.create(ctx, "cat", fixture.RuntimeSpec("cat"), func(o *keelruntime.CreateOpts) { o.IO.Stdin = fifo })
			if _, err := e.rt().Start(ctx, "cat", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Fatalf("open stdin: %v", err)
			}
			defer w.Close()
			if _, err := w.Write([]byte("ping\n")); err != nil {
				t.Fatalf("write stdin: %v", err)
			}
			waitOutput(t, e, "cat.out", "ping")
			// cat reads on until CloseIO, though the writer stays open.
			if err := e.rt().CloseIO(ctx, "cat", ""); err != nil {
				t.Fatalf("close io: %v", err)
			}
			if st := e.wait(ctx, "cat", ""); st.Status != 0 {
				t.Errorf("cat exit %d, want 0", st.Status)
			}
		}},
		{Name: "PauseResume", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			rec := recordEvents(ctx, t, e.rt())
			e.run(ctx, "p", "sleep", "60")
			if err := e.rt().Pause(ctx, "p"); err != nil {
				t.Fatalf("pause: %v", err)
			}
			e.status(ctx, "p", keelruntime.StatusPaused)
			if err := e.rt().Pause(ctx, "p"); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("pause of a paused task: %v, want FailedPrecondition", err)
			}
			if err := e.rt().Resume(ctx, "p"); err != nil {
				t.Fatalf("resume: %v", err)
			}
			e.status(ctx, "p", keelruntime.StatusRunning)
			rec.waitFor(t, "p", "", keelruntime.TopicResumed)
			rec.checkOrder(t, "p", "", keelruntime.TopicCreate, keelruntime.TopicStart, keelruntime.TopicPaused, keelruntime.TopicResumed)
		}},
		{Name: "Pids", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			pid := e.run(ctx, "ps", "sh", "-c", "sleep 60 & echo ready; wait")
			waitOutput(t, e, "ps.out", "ready")
			if err := e.rt().Exec(ctx, keelruntime.ExecOpts{ID: "ps", ExecID: "sl", Spec: processSpec("sleep", "60")}); err != nil {
				t.Fatalf("exec: %v", err)
			}
			xpid, err := e.rt().Start(ctx, "ps", "sl")
			if err != nil {
				t.Fatalf("start exec: %v", err)
			}
			ps, err := e.rt().Pids(ctx, "ps")
			if err != nil {
				t.Fatalf("pids: %v", err)
			}
			var sawInit, sawExec bool
			for _, p := range ps {
				sawInit = sawInit || p.Pid == pid
				sawExec = sawExec || (p.Pid == xpid && p.ExecID == "sl")
			}
			if len(ps) < 3 || !sawInit || !sawExec {
				t.Errorf("pids %+v: want 3 or more, the init pid %d and exec sl's %d", ps, pid, xpid)
			}
		}},
		{Name: "UpdateAndStats", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "mem", "sleep", "60")
			st, err := e.rt().Stats(ctx, "mem")
			if err != nil {
				t.Fatalf("stats: %v", err)
			}
			if st.TypeURL == "" || len(st.Data) == 0 {
				t.Fatalf("stats: %q with %d bytes, want metrics", st.TypeURL, len(st.Data))
			}
			limit := int64(48 << 20)
			if err := e.rt().Update(ctx, "mem", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}, nil); err != nil {
				t.Fatalf("update memory limit: %v", err)
			}
			st, err = e.rt().Stats(ctx, "mem")
			if err != nil {
				t.Fatalf("stats: %v", err)
			}
			if got := memoryLimit(t, st); got != uint64(limit) {
				t.Errorf("memory limit after update: %d, want %d", got, limit)
			}
		}},
		{Name: "OOM", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			rec := recordEvents(ctx, t, e.rt())
			spec := fixture.RuntimeSpec("sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done")
			limit := int64(16 << 20)
			spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
			e.create(ctx, "oom", spec)
			if _, err := e.rt().Start(ctx, "oom", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			if st := e.wait(ctx, "oom", ""); st.Status != 137 {
				t.Errorf("exit of an OOM-killed task: %d, want 137", st.Status)
			}
			rec.waitFor(t, "oom", "", keelruntime.TopicOOM)
		}},
		{Name: "TwoTasks", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "one", "sh", "-c", "sleep 0.3; exit 1")
			e.run(ctx, "two", "sh", "-c", "sleep 0.3; exit 2")
			list, err := e.rt().List(ctx)
			if err != nil || len(list) != 2 {
				t.Fatalf("list: %+v, %v; want two tasks", list, err)
			}
			for i, id := range []string{"one", "two"} {
				if st := e.wait(ctx, id, ""); st.Status != uint32(i+1) {
					t.Errorf("task %s: exit %d, want %d", id, st.Status, i+1)
				}
			}
		}},
		{Name: "EventsOrder", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			rec := recordEvents(ctx, t, e.rt())
			e.run(ctx, "ev", "sh", "-c", "exit 2")
			e.wait(ctx, "ev", "")
			if _, err := e.rt().Delete(ctx, "ev", ""); err != nil {
				t.Fatalf("delete: %v", err)
			}
			exit := rec.waitFor(t, "ev", "", keelruntime.TopicExit)
			rec.waitFor(t, "ev", "", keelruntime.TopicDelete)
			rec.checkOrder(t, "ev", "", keelruntime.TopicCreate, keelruntime.TopicStart, keelruntime.TopicExit, keelruntime.TopicDelete)
			if exit.ExitStatus != 2 || exit.ExitedAt.IsZero() || exit.Pid == 0 {
				t.Errorf("exit event %+v: want status 2, a pid and a time", exit)
			}
		}},
		{Name: "RestartMidTask", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "long", "sleep", "60")
			shortEnd := processEnd(t, e.run(ctx, "short", "sh", "-c", "sleep 0.3; exit 9"))
			e.reopen(ctx)
			rec := recordEvents(ctx, t, e.rt())
			// "short" exits while the plugin is down, or just after.
			shortEnd()
			list, err := e.rt().List(ctx)
			if err != nil || len(list) != 2 {
				t.Fatalf("list after restart: %+v, %v; want both tasks", list, err)
			}
			if st, err := e.rt().State(ctx, "long", ""); err != nil || st.Status != keelruntime.StatusRunning {
				t.Errorf("long task after restart: %+v, %v; want running", st, err)
			}
			if st := e.wait(ctx, "short", ""); st.Status != 9 {
				t.Errorf("exit of the task that ended during the restart: %d, want 9", st.Status)
			}
			if err := e.rt().Kill(ctx, "long", "", syscall.SIGKILL, false); err != nil {
				t.Fatalf("kill after restart: %v", err)
			}
			if st := e.wait(ctx, "long", ""); st.Status != 137 {
				t.Errorf("exit after restart: %d, want 137", st.Status)
			}
			if _, err := e.rt().Delete(ctx, "long", ""); err != nil {
				t.Errorf("delete after restart: %v", err)
			}
			rec.waitFor(t, "long", "", keelruntime.TopicDelete)
			rec.checkOrder(t, "long", "", keelruntime.TopicExit, keelruntime.TopicDelete)
		}},
		{Name: "CRILog", Needs: []string{keelruntime.CapabilityCRILog}, Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			log := e.path("ctr.log")
			e.create(ctx, "log", fixture.RuntimeSpec("sh", "-c", `echo out; echo err >&2; printf "x%.0s" $(seq 1 20000); echo; printf end`),
				func(o *keelruntime.CreateOpts) {
					// The log beside the stdio paths: both get the output.
					o.IO.LogPath, o.IO.LogMaxSize, o.IO.LogMaxFiles = log, 0, 1
				})
			if _, err := e.rt().Start(ctx, "log", ""); err != nil {
				t.Fatalf("start: %v", err)
			}
			// The exit is reported once the output is in the log.
			e.wait(ctx, "log", "")
			recs, err := crilog.ReadAll(log)
			if err != nil {
				t.Fatalf("read the log: %v", err)
			}
			got := map[string]string{}
			for _, r := range recs {
				got[r.Stream] += string(r.Content)
				if !r.Partial {
					got[r.Stream] += "\n"
				}
			}
			wantOut := "out\n" + strings.Repeat("x", 20000) + "\nend"
			if got[crilog.Stdout] != wantOut || got[crilog.Stderr] != "err\n" {
				t.Errorf("log: stdout %d bytes, stderr %q; want %d bytes, %q", len(got[crilog.Stdout]), got[crilog.Stderr], len(wantOut), "err\n")
			}
			if out := e.output("log.out"); out != wantOut {
				t.Errorf("stdout path beside the log: %d bytes, want %d", len(out), len(wantOut))
			}
			if st, err := e.rt().State(ctx, "log", ""); err != nil || st.IO.LogPath != log {
				t.Errorf("state: %+v, %v; want the log path reported", st.IO, err)
			}
		}},
		reopenLogCase,
		recursiveReadOnlyCase,
		{Name: "CheckpointRestore", Needs: []string{keelruntime.CapabilityCheckpoint}, Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
			e := newTaskEnv(t, env)
			e.run(ctx, "cr", "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done")
			// Checkpointed once the loop has gone round.
			for deadline := time.Now().Add(taskWait); ; time.Sleep(20 * time.Millisecond) {
				if n, _ := strconv.Atoi(strings.TrimSpace(e.output(filepath.Join("cr-rootfs", "tmp", "n")))); n >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the loop to checkpoint did not go round in %s", taskWait)
				}
			}
			image := e.path("checkpoint")
			if err := e.rt().Checkpoint(ctx, "cr", keelruntime.CheckpointOpts{Path: image, Exit: true}); err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			e.wait(ctx, "cr", "")
			if _, err := e.rt().Delete(ctx, "cr", ""); err != nil {
				t.Fatalf("delete checkpointed task: %v", err)
			}
			e.create(ctx, "cr", fixture.RuntimeSpec("sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"),
				func(o *keelruntime.CreateOpts) { o.Checkpoint = image })
			if _, err := e.rt().Start(ctx, "cr", ""); err != nil {
				t.Fatalf("start from checkpoint: %v", err)
			}
			e.status(ctx, "cr", keelruntime.StatusRunning)
		}},
	}
}

// processEnd returns a function that waits, up to taskWait, until
// process pid has ended: its pidfd, opened now, turns readable.
func processEnd(t conformance.T, pid uint32) func() {
	t.Helper()
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		t.Fatalf("pidfd of %d: %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func() {
		t.Helper()
		for deadline := time.Now().Add(taskWait); ; {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
			switch {
			case n == 1:
				return
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				t.Fatalf("poll the pidfd of %d: %v", pid, err)
			default:
				t.Fatalf("process %d still runs after %s", pid, taskWait)
			}
		}
	}
}

// waitOutput waits until the file name holds want.
func waitOutput(t conformance.T, e *taskEnv, name, want string) {
	t.Helper()
	deadline := time.Now().Add(taskWait)
	for time.Now().Before(deadline) {
		if strings.Contains(e.output(name), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %q, want %q in it", name, e.output(name), want)
}
