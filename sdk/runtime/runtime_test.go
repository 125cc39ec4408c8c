package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
	"github.com/keel-runtime/keel/sdk/mount"
)

// fake is a Runtime whose methods are its fields; the methods it does not
// define stay NotImplemented.
type fake struct {
	NotImplemented
	create func(context.Context, CreateOpts) (uint32, error)
	start  func(ctx context.Context, id, execID string) (uint32, error)
	delete func(ctx context.Context, id, execID string) (ExitStatus, error)
	kill   func(ctx context.Context, id, execID string, sig syscall.Signal, all bool) error
	exec   func(context.Context, ExecOpts) error
	update func(ctx context.Context, id string, res *specs.LinuxResources, ann map[string]string) error
	pids   func(ctx context.Context, id string) ([]ProcessInfo, error)
	wait   func(ctx context.Context, id, execID string) (ExitStatus, error)
	state  func(ctx context.Context, id, execID string) (TaskState, error)
	list   func(ctx context.Context) ([]TaskState, error)
	events func(ctx context.Context) (<-chan Event, <-chan error)
}

var _ Runtime = (*fake)(nil)

func (f *fake) Create(ctx context.Context, o CreateOpts) (uint32, error) { return f.create(ctx, o) }
func (f *fake) Start(ctx context.Context, id, execID string) (uint32, error) {
	return f.start(ctx, id, execID)
}
func (f *fake) Delete(ctx context.Context, id, execID string) (ExitStatus, error) {
	return f.delete(ctx, id, execID)
}
func (f *fake) Kill(ctx context.Context, id, execID string, sig syscall.Signal, all bool) error {
	return f.kill(ctx, id, execID, sig, all)
}
func (f *fake) Exec(ctx context.Context, o ExecOpts) error { return f.exec(ctx, o) }
func (f *fake) Update(ctx context.Context, id string, res *specs.LinuxResources, ann map[string]string) error {
	return f.update(ctx, id, res, ann)
}
func (f *fake) Pids(ctx context.Context, id string) ([]ProcessInfo, error) { return f.pids(ctx, id) }
func (f *fake) Wait(ctx context.Context, id, execID string) (ExitStatus, error) {
	return f.wait(ctx, id, execID)
}
func (f *fake) State(ctx context.Context, id, execID string) (TaskState, error) {
	return f.state(ctx, id, execID)
}
func (f *fake) List(ctx context.Context) ([]TaskState, error)           { return f.list(ctx) }
func (f *fake) Events(ctx context.Context) (<-chan Event, <-chan error) { return f.events(ctx) }

// serve serves impl over a real gRPC connection and returns both the typed
// client and the raw connection.
func serve(t *testing.T, impl Runtime) (Runtime, *grpc.ClientConn) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(wire.ServerOptions()...)
	RegisterServer(s, func(context.Context) (Runtime, error) { return impl, nil })
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn", append(wire.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return NewClient(conn), conn
}

func notFound(id string) error { return fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound) }

func TestRoundTrip(t *testing.T) {
	exited := time.Unix(1700000000, 123).UTC()
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"/bin/sh", "-c", "echo hi"}, Cwd: "/"},
		Root:    &specs.Root{Path: "rootfs"},
	}
	createOpts := CreateOpts{
		ID:      "web",
		Spec:    spec,
		Rootfs:  []mount.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a", "upperdir=/b", "workdir=/c"}}},
		IO:      IO{Stdin: "/run/in", Stdout: "/run/out", Stderr: "/run/err"},
		Options: json.RawMessage(`{"systemd_cgroup":true}`),
	}
	execOpts := ExecOpts{ID: "web", ExecID: "sh", Spec: &specs.Process{Args: []string{"sh"}, Terminal: true}, IO: IO{Stdout: "/run/tty", Terminal: true}}
	state := TaskState{ID: "web", Pid: 42, Status: StatusStopped, IO: createOpts.IO, ExitStatus: 3, ExitedAt: exited}
	limit := int64(1 << 30)
	resources := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}

	var (
		mu  sync.Mutex
		got = map[string]any{}
	)
	record := func(k string, v any) {
		mu.Lock()
		got[k] = v
		mu.Unlock()
	}
	rt, _ := serve(t, &fake{
		create: func(_ context.Context, o CreateOpts) (uint32, error) {
			if o.ID != "web" {
				return 0, fmt.Errorf("task %q: %w", o.ID, errdefs.ErrAlreadyExists)
			}
			record("create", o)
			return 42, nil
		},
		start: func(_ context.Context, id, execID string) (uint32, error) {
			if id != "web" {
				return 0, notFound(id)
			}
			return 42, nil
		},
		delete: func(_ context.Context, id, _ string) (ExitStatus, error) {
			if id != "web" {
				return ExitStatus{}, notFound(id)
			}
			return ExitStatus{Pid: 42, Status: 3, ExitedAt: exited}, nil
		},
		kill: func(_ context.Context, id, execID string, sig syscall.Signal, all bool) error {
			record("kill", []any{id, execID, sig, all})
			return nil
		},
		exec: func(_ context.Context, o ExecOpts) error {
			record("exec", o)
			return nil
		},
		update: func(_ context.Context, id string, res *specs.LinuxResources, ann map[string]string) error {
			record("update", []any{id, res, ann})
			return nil
		},
		pids: func(context.Context, string) ([]ProcessInfo, error) {
			return []ProcessInfo{{Pid: 42}, {Pid: 43, ExecID: "sh"}}, nil
		},
		wait: func(ctx context.Context, id, _ string) (ExitStatus, error) {
			if id == "forever" {
				<-ctx.Done()
				return ExitStatus{}, ctx.Err()
			}
			return ExitStatus{Pid: 42, Status: 3, ExitedAt: exited}, nil
		},
		state: func(_ context.Context, id, _ string) (TaskState, error) {
			if id != "web" {
				return TaskState{}, notFound(id)
			}
			return state, nil
		},
		list: func(context.Context) ([]TaskState, error) { return []TaskState{state}, nil },
	})
	ctx := t.Context()

	pid, err := rt.Create(ctx, createOpts)
	if err != nil || pid != 42 {
		t.Fatalf("Create: %d, %v", pid, err)
	}
	if c := got["create"].(CreateOpts); !reflect.DeepEqual(c, createOpts) {
		t.Errorf("Create arrived as %+v, want %+v", c, createOpts)
	}
	if pid, err := rt.Start(ctx, "web", ""); err != nil || pid != 42 {
		t.Errorf("Start: %d, %v", pid, err)
	}
	want := ExitStatus{Pid: 42, Status: 3, ExitedAt: exited}
	if st, err := rt.Wait(ctx, "web", ""); err != nil || st != want {
		t.Errorf("Wait: %+v, %v", st, err)
	}
	if st, err := rt.Delete(ctx, "web", ""); err != nil || st != want {
		t.Errorf("Delete: %+v, %v", st, err)
	}
	if err := rt.Kill(ctx, "web", "sh", syscall.SIGTERM, true); err != nil {
		t.Error(err)
	}
	if k := got["kill"]; !reflect.DeepEqual(k, []any{"web", "sh", syscall.SIGTERM, true}) {
		t.Errorf("Kill arrived as %v", k)
	}
	if err := rt.Exec(ctx, execOpts); err != nil {
		t.Error(err)
	}
	if e := got["exec"]; !reflect.DeepEqual(e, execOpts) {
		t.Errorf("Exec arrived as %+v", e)
	}
	if err := rt.Update(ctx, "web", resources, map[string]string{"a": "b"}); err != nil {
		t.Error(err)
	}
	if u := got["update"]; !reflect.DeepEqual(u, []any{"web", resources, map[string]string{"a": "b"}}) {
		t.Errorf("Update arrived as %v", u)
	}
	if ps, err := rt.Pids(ctx, "web"); err != nil || !reflect.DeepEqual(ps, []ProcessInfo{{Pid: 42}, {Pid: 43, ExecID: "sh"}}) {
		t.Errorf("Pids: %v, %v", ps, err)
	}
	if st, err := rt.State(ctx, "web", ""); err != nil || !reflect.DeepEqual(st, state) {
		t.Errorf("State: %+v, %v", st, err)
	}
	if ts, err := rt.List(ctx); err != nil || !reflect.DeepEqual(ts, []TaskState{state}) {
		t.Errorf("List: %+v, %v", ts, err)
	}

	t.Run("Errors", func(t *testing.T) {
		tests := []struct {
			name  string
			call  func() error
			class func(error) bool
		}{
			{"StateNotFound", func() error { _, err := rt.State(ctx, "nope", ""); return err }, errdefs.IsNotFound},
			{"DeleteNotFound", func() error { _, err := rt.Delete(ctx, "nope", ""); return err }, errdefs.IsNotFound},
			{"StartNotFound", func() error { _, err := rt.Start(ctx, "nope", ""); return err }, errdefs.IsNotFound},
			{"CreateAlreadyExists", func() error { _, err := rt.Create(ctx, CreateOpts{ID: "taken"}); return err }, errdefs.IsAlreadyExists},
			{"CheckpointNotImplemented", func() error { return rt.Checkpoint(ctx, "web", CheckpointOpts{Path: "/x"}) }, errdefs.IsNotImplemented},
			{"PauseNotImplemented", func() error { return rt.Pause(ctx, "web") }, errdefs.IsNotImplemented},
			{"WaitDeadline", func() error {
				ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				_, err := rt.Wait(ctx, "forever", "")
				return err
			}, errdefs.IsDeadlineExceeded},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.call(); !tt.class(err) {
					t.Fatalf("wrong error class: %v", err)
				}
			})
		}
	})
}

func TestBadSpecIsInvalidArgument(t *testing.T) {
	_, conn := serve(t, &fake{create: func(context.Context, CreateOpts) (uint32, error) { return 1, nil }})
	_, err := pluginv1.NewRuntimeClient(conn).Create(t.Context(), &pluginv1.CreateTaskRequest{Id: "x", Spec: []byte("{not json")})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("create with a broken spec: %v, want InvalidArgument", err)
	}
}

// publisher is a runtime's event source as an implementation would write
// it: it sends until ctx ends, then closes its channels.
func publisher(n int, stop <-chan struct{}, ended chan<- struct{}) func(ctx context.Context) (<-chan Event, <-chan error) {
	return func(ctx context.Context) (<-chan Event, <-chan error) {
		events := make(chan Event)
		errs := make(chan error, 1)
		go func() {
			defer close(events)
			defer close(errs)
			defer func() {
				if ended != nil {
					ended <- struct{}{}
				}
			}()
			for i := range n {
				ev := Event{Topic: TopicExit, ID: fmt.Sprintf("task-%d", i), Pid: uint32(i), Timestamp: time.Unix(0, int64(i+1)).UTC()}
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-stop:
			case <-ctx.Done():
			}
		}()
		return events, errs
	}
}

func TestEvents(t *testing.T) {
	const n = 500
	t.Run("InOrderThenCancel", func(t *testing.T) {
		ended := make(chan struct{}, 1)
		rt, _ := serve(t, &fake{events: publisher(n, nil, ended)})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		events, errs := rt.Events(ctx)
		for i := range n {
			ev := <-events
			if ev.ID != fmt.Sprintf("task-%d", i) || ev.Pid != uint32(i) || ev.Topic != TopicExit || ev.Timestamp.UnixNano() != int64(i+1) {
				t.Fatalf("event %d: got %+v", i, ev)
			}
		}
		cancel()
		if _, ok := <-events; ok {
			t.Fatal("an event after the last one")
		}
		if err := <-errs; err != nil {
			t.Fatalf("events ended by the subscriber: %v, want nil", err)
		}
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the runtime's publisher outlived the subscription")
		}
	})
	t.Run("EndedByRuntime", func(t *testing.T) {
		stop := make(chan struct{})
		close(stop)
		rt, _ := serve(t, &fake{events: publisher(3, stop, nil)})
		events, errs := rt.Events(t.Context())
		count := 0
		for range events {
			count++
		}
		if count != 3 {
			t.Fatalf("got %d events, want 3", count)
		}
		if err := <-errs; !errdefs.IsUnavailable(err) {
			t.Fatalf("events ended by the runtime: %v, want Unavailable", err)
		}
	})
	t.Run("NotImplemented", func(t *testing.T) {
		rt, _ := serve(t, NotImplemented{})
		events, errs := rt.Events(t.Context())
		for range events {
			t.Fatal("an event from a runtime without events")
		}
		if err := <-errs; !errdefs.IsNotImplemented(err) {
			t.Fatalf("events: %v, want NotImplemented", err)
		}
	})
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusUnknown: "unknown", StatusCreated: "created", StatusRunning: "running",
		StatusStopped: "stopped", StatusPaused: "paused", StatusPausing: "pausing", Status(99): "unknown"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", s, s.String(), want)
		}
	}
	// The Go enum and the wire enum must keep the same numbers.
	for s, p := range map[Status]pluginv1.TaskStatus{StatusUnknown: pluginv1.TaskStatus_TASK_STATUS_UNKNOWN,
		StatusCreated: pluginv1.TaskStatus_TASK_STATUS_CREATED, StatusRunning: pluginv1.TaskStatus_TASK_STATUS_RUNNING,
		StatusStopped: pluginv1.TaskStatus_TASK_STATUS_STOPPED, StatusPaused: pluginv1.TaskStatus_TASK_STATUS_PAUSED,
		StatusPausing: pluginv1.TaskStatus_TASK_STATUS_PAUSING} {
		if int32(s) != int32(p) {
			t.Errorf("%s is %d, wire %d", s, s, p)
		}
	}
}
