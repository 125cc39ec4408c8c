package server

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/check"
	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Runtime task ids join the namespace and the container id with "--", which
// neither may contain (both follow containerd's identifier rule), so a
// runtime's List maps back to namespaces unambiguously.
const taskIDSep = check.TaskIDSep

func taskID(ctx context.Context, id string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	return ns + taskIDSep + id, nil
}

func splitTaskID(tid string) (ns, id string, ok bool) {
	return strings.Cut(tid, taskIDSep)
}

// startRuntimes connects the runtime plugins and republishes their events.
func (s *Server) startRuntimes() error {
	s.runtimes = map[string]runtime.Runtime{}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopEvents = cancel
	for _, p := range s.cfg.PluginsOf(sdk.KindRuntime) {
		conn, err := s.plugins.Conn(p.Kind, p.Name)
		if err != nil {
			return err
		}
		rt := runtime.NewClient(conn)
		s.runtimes[p.Name] = rt
		s.eventsWG.Add(1)
		go func() {
			defer s.eventsWG.Done()
			s.relayEvents(ctx, p.Name, rt)
		}()
	}
	return nil
}

// runtimeHasTasks tells whether the runtime plugin behind conn has a task:
// one that has, however idle, is never stopped for idleness.
func runtimeHasTasks(ctx context.Context, conn grpc.ClientConnInterface) (bool, error) {
	tasks, err := runtime.NewClient(conn).List(ctx)
	return len(tasks) > 0, err
}

// stopRuntimes ends the event relays.
func (s *Server) stopRuntimes() {
	if s.stopEvents != nil {
		s.stopEvents()
		s.eventsWG.Wait()
	}
}

// relayEvents subscribes to a runtime's events and republishes them, again
// after each end of the stream (a plugin restart): the plugin keeps what
// nobody received, so a resubscription loses nothing. The subscription is
// passive: it neither holds the runtime running nor starts it after an
// idle stop (with no task, the runtime has no event to tell), and waits
// for its next start.
func (s *Server) relayEvents(ctx context.Context, name string, rt runtime.Runtime) {
	log := s.logger.Named("events").With("runtime", name)
	ctx = pluginhost.Passive(ctx)
	for ctx.Err() == nil {
		evs, errs := rt.Events(ctx)
		for ev := range evs {
			ns, id, ok := splitTaskID(ev.ID)
			if !ok {
				continue // not a task keeld made
			}
			s.events.Publish(ns, ev.Topic, events.Task{
				ID: id, ExecID: ev.ExecID, Runtime: name, Pid: ev.Pid, ExitStatus: ev.ExitStatus, ExitedAt: ev.ExitedAt,
			})
		}
		if err := <-errs; err != nil && ctx.Err() == nil {
			log.Debug("event stream ended; resubscribing", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// defaultRuntime is the only runtime configured.
func (s *Server) defaultRuntime() (string, error) {
	names := make([]string, 0, len(s.runtimes))
	for n := range s.runtimes {
		names = append(names, n)
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("%w: %w", errNoRuntime, errdefs.ErrFailedPrecondition)
	case 1:
		return names[0], nil
	}
	slices.Sort(names)
	return "", fmt.Errorf("runtime plugins %s are configured: name one: %w", strings.Join(names, ", "), errdefs.ErrInvalidArgument)
}

func (s *Server) runtime(name string) (runtime.Runtime, error) {
	rt, ok := s.runtimes[name]
	if !ok {
		return nil, fmt.Errorf("runtime %q is not configured: %w", name, errdefs.ErrNotFound)
	}
	return rt, nil
}

func (s *Server) registerTasks(srv *grpc.Server) {
	keelv1.RegisterContainersServer(srv, containersService{s: s})
	keelv1.RegisterTasksServer(srv, tasksService{s: s})
	keelv1.RegisterLogsServer(srv, logsService{s: s})
}

type tasksService struct {
	keelv1.UnimplementedTasksServer
	s *Server
}

// route finds the container id's runtime and its runtime task id.
func (ts tasksService) route(ctx context.Context, id string) (runtime.Runtime, string, error) {
	c, err := ts.s.db.Containers().Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	rt, err := ts.s.runtime(c.Runtime)
	if err != nil {
		return nil, "", fmt.Errorf("container %q: %w", id, err)
	}
	tid, err := taskID(ctx, id)
	return rt, tid, err
}

func ioFromProto(io *keelv1.TaskIO) runtime.IO {
	if io == nil {
		return runtime.IO{}
	}
	return runtime.IO{Stdin: io.Stdin, Stdout: io.Stdout, Stderr: io.Stderr, Terminal: io.Terminal}
}

func exitToProto(e runtime.ExitStatus) *keelv1.TaskExit {
	out := &keelv1.TaskExit{Pid: e.Pid, ExitStatus: e.Status}
	if !e.ExitedAt.IsZero() {
		out.ExitedAt = timestamppb.New(e.ExitedAt)
	}
	return out
}

func (ts tasksService) Create(ctx context.Context, req *keelv1.CreateTaskRequest) (*keelv1.CreateTaskResponse, error) {
	c, err := ts.s.db.Containers().Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return nil, fmt.Errorf("container %q: spec: %v: %w", c.ID, err, errdefs.ErrInvalidArgument)
	}
	var rootfs []mount.Mount
	if c.SnapshotKey != "" {
		sn, ok := ts.s.snapshotters[c.Snapshotter]
		if !ok {
			return nil, fmt.Errorf("container %q: snapshotter %q is not configured: %w", c.ID, c.Snapshotter, errdefs.ErrNotFound)
		}
		if rootfs, err = sn.Mounts(ctx, c.SnapshotKey); err != nil {
			return nil, fmt.Errorf("container %q: rootfs: %w", c.ID, err)
		}
	}
	io, err := ts.s.taskIO(ctx, c, req.Io)
	if err != nil {
		return nil, err
	}
	settle, err := ts.s.setupNetwork(ctx, c, tid, &spec)
	if err != nil {
		return nil, err
	}
	pid, err := rt.Create(ctx, runtime.CreateOpts{
		ID: tid, Spec: &spec, Rootfs: rootfs, IO: io,
		Checkpoint: req.Checkpoint, Options: c.RuntimeOptions,
	})
	settle(err == nil)
	if err != nil {
		return nil, err
	}
	if err := ts.s.checkLogKept(ctx, rt, c.Runtime, tid, io); err != nil {
		ts.s.teardownNetwork(ctx, tid) // checkLogKept deleted the task
		return nil, err
	}
	return &keelv1.CreateTaskResponse{Pid: pid}, nil
}

func (ts tasksService) Start(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.StartTaskResponse, error) {
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	pid, err := rt.Start(ctx, tid, req.ExecId)
	if err != nil {
		return nil, err
	}
	return &keelv1.StartTaskResponse{Pid: pid}, nil
}

func (ts tasksService) Delete(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.TaskExit, error) {
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	e, err := rt.Delete(ctx, tid, req.ExecId)
	if req.ExecId == "" && (err == nil || errdefs.IsNotFound(err)) {
		ts.s.teardownNetwork(ctx, tid)
	}
	if err != nil {
		return nil, err
	}
	return exitToProto(e), nil
}

// simple routes a call that returns only an error.
func (ts tasksService) simple(ctx context.Context, id string, fn func(rt runtime.Runtime, tid string) error) (*emptypb.Empty, error) {
	rt, tid, err := ts.route(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := fn(rt, tid); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (ts tasksService) Kill(ctx context.Context, req *keelv1.KillTaskRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		return rt.Kill(ctx, tid, req.ExecId, syscall.Signal(req.Signal), req.All)
	})
}

func (ts tasksService) Exec(ctx context.Context, req *keelv1.ExecTaskRequest) (*emptypb.Empty, error) {
	var p specs.Process
	if err := json.Unmarshal(req.Spec, &p); err != nil {
		return nil, fmt.Errorf("exec %q: process spec: %v: %w", req.ExecId, err, errdefs.ErrInvalidArgument)
	}
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		return rt.Exec(ctx, runtime.ExecOpts{ID: tid, ExecID: req.ExecId, Spec: &p, IO: ioFromProto(req.Io)})
	})
}

func (ts tasksService) ResizePty(ctx context.Context, req *keelv1.ResizePtyRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		return rt.ResizePty(ctx, tid, req.ExecId, req.Width, req.Height)
	})
}

func (ts tasksService) CloseIO(ctx context.Context, req *keelv1.TaskRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error { return rt.CloseIO(ctx, tid, req.ExecId) })
}

func (ts tasksService) Pause(ctx context.Context, req *keelv1.TaskRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error { return rt.Pause(ctx, tid) })
}

func (ts tasksService) Resume(ctx context.Context, req *keelv1.TaskRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error { return rt.Resume(ctx, tid) })
}

func (ts tasksService) Checkpoint(ctx context.Context, req *keelv1.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		return rt.Checkpoint(ctx, tid, runtime.CheckpointOpts{Path: req.Path, Exit: req.Exit, Options: req.Options})
	})
}

func (ts tasksService) Update(ctx context.Context, req *keelv1.UpdateTaskRequest) (*emptypb.Empty, error) {
	var res *specs.LinuxResources
	if len(req.Resources) > 0 {
		res = &specs.LinuxResources{}
		if err := json.Unmarshal(req.Resources, res); err != nil {
			return nil, fmt.Errorf("task %q: resources: %v: %w", req.Id, err, errdefs.ErrInvalidArgument)
		}
	}
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		return rt.Update(ctx, tid, res, req.Annotations)
	})
}

func (ts tasksService) Pids(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.PidsResponse, error) {
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	ps, err := rt.Pids(ctx, tid)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.PidsResponse{}
	for _, p := range ps {
		resp.Processes = append(resp.Processes, &keelv1.PidsResponse_Process{Pid: p.Pid, ExecId: p.ExecID})
	}
	return resp, nil
}

func (ts tasksService) Stats(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.TaskStats, error) {
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	st, err := rt.Stats(ctx, tid)
	if err != nil {
		return nil, err
	}
	return &keelv1.TaskStats{TypeUrl: st.TypeURL, Data: st.Data}, nil
}

// Wait outlives a runtime plugin restart: while the plugin is unavailable
// it asks again, until the call's context ends.
func (ts tasksService) Wait(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.TaskExit, error) {
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	for {
		e, err := rt.Wait(ctx, tid, req.ExecId)
		if err == nil {
			return exitToProto(e), nil
		}
		if !errdefs.IsUnavailable(err) || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func taskToProto(rtName, id string, st runtime.TaskState) *keelv1.Task {
	t := &keelv1.Task{
		Id: id, ExecId: st.ExecID, Runtime: rtName, Pid: st.Pid, Status: keelv1.TaskStatus(st.Status),
		Io:         &keelv1.TaskIO{Stdin: st.IO.Stdin, Stdout: st.IO.Stdout, Stderr: st.IO.Stderr, Terminal: st.IO.Terminal, Log: taskLogToProto(st.IO), KeepStdin: st.IO.KeepStdin},
		ExitStatus: st.ExitStatus, Reason: st.Reason,
	}
	if !st.ExitedAt.IsZero() {
		t.ExitedAt = timestamppb.New(st.ExitedAt)
	}
	return t
}

func (ts tasksService) Get(ctx context.Context, req *keelv1.TaskRequest) (*keelv1.Task, error) {
	c, err := ts.s.db.Containers().Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	rt, tid, err := ts.route(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	st, err := rt.State(ctx, tid, req.ExecId)
	if err != nil {
		return nil, err
	}
	return taskToProto(c.Runtime, req.Id, st), nil
}

// List asks every runtime at once (listTasks) and keeps the call's
// namespace's tasks.
func (ts tasksService) List(ctx context.Context, _ *keelv1.ListTasksRequest) (*keelv1.ListTasksResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListTasksResponse{}
	err = ts.s.listTasks(ctx, func(name string, st runtime.TaskState) {
		if tns, id, ok := splitTaskID(st.ID); ok && tns == ns {
			resp.Tasks = append(resp.Tasks, taskToProto(name, id, st))
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(resp.Tasks, func(a, b *keelv1.Task) int { return strings.Compare(a.Id, b.Id) })
	return resp, nil
}

// Events is the task events of the exchange: those of the call's
// namespace, or of every namespace with All.
func (ts tasksService) Events(req *keelv1.TaskEventsRequest, stream grpc.ServerStreamingServer[keelv1.TaskEvent]) error {
	ctx := stream.Context()
	ns := ""
	if !req.All {
		var err error
		if ns, err = namespaces.NamespaceRequired(ctx); err != nil {
			return err
		}
	}
	// Headers now, so the client knows it is subscribed before any event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for ev := range ts.s.events.Subscribe(ctx, taskEvents(ns)) {
		t, ok := ev.Event.(events.Task)
		if !ok {
			continue // a marker: this API has no way to tell of it
		}
		if err := stream.Send(taskEventToProto(ev, t)); err != nil {
			return err
		}
	}
	return nil
}

// taskEvents matches the task events of namespace ns (of all for "").
func taskEvents(ns string) func(events.Envelope) bool {
	return func(ev events.Envelope) bool {
		return strings.HasPrefix(ev.Topic, events.TopicTaskPrefix) && (ns == "" || ev.Namespace == ns)
	}
}
