package client

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// ExitStatus is how a process ended, or why waiting failed (Err).
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
	Err      error
}

// Result returns the code, or the error.
func (e ExitStatus) Result() (uint32, time.Time, error) { return e.Code, e.ExitedAt, e.Err }

// TaskInfo is what keeld's runtime reports of a process.
type TaskInfo struct {
	ID         string
	ExecID     string
	Runtime    string
	Pid        uint32
	Status     runtime.Status
	ExitStatus uint32
	ExitedAt   time.Time
	Terminal   bool
	Stdout     string // the path the runtime was given
	Reason     string // why the status is unknown, e.g. a shim that died
	// Log is the log the runtime writes the output to, if any.
	Log *cio.Log
	// KeepStdin: keeld holds the process's stdin (Task.WriteStdin).
	KeepStdin bool
}

// Process is a task's init process or one exec'd beside it.
type Process struct {
	c      *Client
	id     string
	execID string
	pid    uint32
	io     cio.IO
}

// Task is a container's running instance: its init process.
type Task struct{ Process }

func (c *Client) tasks() keelv1.TasksClient { return keelv1.NewTasksClient(c.conn) }

func ioToProto(cfg cio.Config) *keelv1.TaskIO {
	return &keelv1.TaskIO{Stdin: cfg.Stdin, Stdout: cfg.Stdout, Stderr: cfg.Stderr, Terminal: cfg.Terminal, Log: logToProto(cfg.Log), KeepStdin: cfg.KeepStdin}
}

// NewTaskOpt adjusts a task's creation.
type NewTaskOpt func(*keelv1.CreateTaskRequest)

// WithRestoreFrom restores the task from a checkpoint directory.
func WithRestoreFrom(dir string) NewTaskOpt {
	return func(r *keelv1.CreateTaskRequest) { r.Checkpoint = dir }
}

// NewTask creates the container's task, not yet started, with the stdio
// ioCreate makes (nil: none). A spec with a terminal gets one.
func (ct *Container) NewTask(ctx context.Context, ioCreate cio.Creator, opts ...NewTaskOpt) (*Task, error) {
	if ioCreate == nil {
		ioCreate = cio.NullIO
	}
	pio, err := ioCreate(ct.info.ID)
	if err != nil {
		return nil, err
	}
	cfg := pio.Config()
	if ct.info.Spec != nil && ct.info.Spec.Process != nil && ct.info.Spec.Process.Terminal {
		cfg.Terminal = true
	}
	req := &keelv1.CreateTaskRequest{Id: ct.info.ID, Io: ioToProto(cfg)}
	for _, o := range opts {
		o(req)
	}
	resp, err := ct.c.tasks().Create(ctx, req)
	if err != nil {
		pio.Close()
		return nil, err
	}
	return &Task{Process{c: ct.c, id: ct.info.ID, pid: resp.Pid, io: pio}}, nil
}

// Task returns the container's existing task, without stdio of the
// caller's (the runtime kept the paths it was created with).
func (ct *Container) Task(ctx context.Context) (*Task, error) {
	st, err := ct.c.tasks().Get(ctx, &keelv1.TaskRequest{Id: ct.info.ID})
	if err != nil {
		return nil, err
	}
	pio, _ := cio.NullIO("")
	return &Task{Process{c: ct.c, id: ct.info.ID, pid: st.Pid, io: pio}}, nil
}

// ID is the container id.
func (p *Process) ID() string { return p.id }

// ExecID is empty for a task's init process.
func (p *Process) ExecID() string { return p.execID }

// Pid is the process id, on the host.
func (p *Process) Pid() uint32 { return p.pid }

// IO is the process's stdio.
func (p *Process) IO() cio.IO { return p.io }

func (p *Process) req() *keelv1.TaskRequest { return &keelv1.TaskRequest{Id: p.id, ExecId: p.execID} }

// Start starts the process.
func (p *Process) Start(ctx context.Context) error {
	resp, err := p.c.tasks().Start(ctx, p.req())
	if err != nil {
		return err
	}
	p.pid = resp.Pid
	p.io.Started()
	return nil
}

// Wait returns a channel that gets the process's exit once it has exited
// and its output has been copied; an error ends ctx or reports why
// waiting failed. Safe to call before Start.
func (p *Process) Wait(ctx context.Context) (<-chan ExitStatus, error) {
	ch := make(chan ExitStatus, 1)
	go func() {
		resp, err := p.c.tasks().Wait(ctx, p.req())
		if err != nil {
			ch <- ExitStatus{Code: 255, Err: err}
			return
		}
		p.io.Wait()
		ch <- ExitStatus{Code: resp.ExitStatus, ExitedAt: exitedAt(resp.ExitedAt)}
	}()
	return ch, nil
}

func exitedAt(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// KillOpt adjusts a kill.
type KillOpt func(*keelv1.KillTaskRequest)

// WithKillAll signals every process of the task.
func WithKillAll(r *keelv1.KillTaskRequest) { r.All = true }

// Kill signals the process.
func (p *Process) Kill(ctx context.Context, sig syscall.Signal, opts ...KillOpt) error {
	req := &keelv1.KillTaskRequest{Id: p.id, ExecId: p.execID, Signal: uint32(sig)}
	for _, o := range opts {
		o(req)
	}
	_, err := p.c.tasks().Kill(ctx, req)
	return err
}

// Delete removes the stopped process and returns its exit; the stdio is
// closed. FailedPrecondition while it runs.
func (p *Process) Delete(ctx context.Context) (ExitStatus, error) {
	resp, err := p.c.tasks().Delete(ctx, p.req())
	if err != nil {
		return ExitStatus{}, err
	}
	p.io.Close()
	return ExitStatus{Code: resp.ExitStatus, ExitedAt: exitedAt(resp.ExitedAt)}, nil
}

// Resize resizes the process's console.
func (p *Process) Resize(ctx context.Context, width, height uint32) error {
	_, err := p.c.tasks().ResizePty(ctx, &keelv1.ResizePtyRequest{Id: p.id, ExecId: p.execID, Width: width, Height: height})
	return err
}

// CloseIO closes the process's stdin, so it reads EOF.
func (p *Process) CloseIO(ctx context.Context) error {
	_, err := p.c.tasks().CloseIO(ctx, p.req())
	return err
}

// Status reports the process.
func (p *Process) Status(ctx context.Context) (TaskInfo, error) {
	resp, err := p.c.tasks().Get(ctx, p.req())
	if err != nil {
		return TaskInfo{}, err
	}
	return taskFromProto(resp), nil
}

// Exec adds a process to the running task; Start starts it.
func (t *Task) Exec(ctx context.Context, execID string, spec *specs.Process, ioCreate cio.Creator) (*Process, error) {
	if ioCreate == nil {
		ioCreate = cio.NullIO
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("exec %q: %v: %w", execID, err, errdefs.ErrInvalidArgument)
	}
	pio, err := ioCreate(t.id + "-" + execID)
	if err != nil {
		return nil, err
	}
	cfg := pio.Config()
	cfg.Terminal = cfg.Terminal || spec.Terminal
	if _, err := t.c.tasks().Exec(ctx, &keelv1.ExecTaskRequest{Id: t.id, ExecId: execID, Spec: b, Io: ioToProto(cfg)}); err != nil {
		pio.Close()
		return nil, err
	}
	return &Process{c: t.c, id: t.id, execID: execID, io: pio}, nil
}

// LoadProcess returns the task's exec'd process execID, without stdio of
// the caller's.
func (t *Task) LoadProcess(execID string) *Process {
	pio, _ := cio.NullIO("")
	return &Process{c: t.c, id: t.id, execID: execID, io: pio}
}

// Pause freezes every process of the task.
func (t *Task) Pause(ctx context.Context) error {
	_, err := t.c.tasks().Pause(ctx, t.req())
	return err
}

// Resume thaws the task.
func (t *Task) Resume(ctx context.Context) error {
	_, err := t.c.tasks().Resume(ctx, t.req())
	return err
}

// ProcessInfo is one process of a task.
type ProcessInfo struct {
	Pid    uint32
	ExecID string
}

// Pids lists the task's processes.
func (t *Task) Pids(ctx context.Context) ([]ProcessInfo, error) {
	resp, err := t.c.tasks().Pids(ctx, t.req())
	if err != nil {
		return nil, err
	}
	out := make([]ProcessInfo, len(resp.Processes))
	for i, p := range resp.Processes {
		out[i] = ProcessInfo{Pid: p.Pid, ExecID: p.ExecId}
	}
	return out, nil
}

// Update changes the task's resources.
func (t *Task) Update(ctx context.Context, resources *specs.LinuxResources) error {
	b, err := json.Marshal(resources)
	if err != nil {
		return fmt.Errorf("resources: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	_, err = t.c.tasks().Update(ctx, &keelv1.UpdateTaskRequest{Id: t.id, Resources: b})
	return err
}

// Metrics are a task's stats: Data is the message TypeURL names (the
// cgroups v1 or v2 metrics, as containerd names them).
type Metrics struct {
	TypeURL string
	Data    []byte
}

// Metrics returns the task's stats.
func (t *Task) Metrics(ctx context.Context) (Metrics, error) {
	resp, err := t.c.tasks().Stats(ctx, t.req())
	if err != nil {
		return Metrics{}, err
	}
	return Metrics{TypeURL: resp.TypeUrl, Data: resp.Data}, nil
}

// Checkpoint writes the task's checkpoint image to dir; exit stops it
// after.
func (t *Task) Checkpoint(ctx context.Context, dir string, exit bool) error {
	_, err := t.c.tasks().Checkpoint(ctx, &keelv1.CheckpointTaskRequest{Id: t.id, Path: dir, Exit: exit})
	return err
}

// Tasks lists the tasks of the namespace, on every runtime.
func (c *Client) Tasks(ctx context.Context) ([]TaskInfo, error) {
	resp, err := c.tasks().List(ctx, &keelv1.ListTasksRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]TaskInfo, len(resp.Tasks))
	for i, t := range resp.Tasks {
		out[i] = taskFromProto(t)
	}
	return out, nil
}

func taskFromProto(t *keelv1.Task) TaskInfo {
	return TaskInfo{
		ID: t.Id, ExecID: t.ExecId, Runtime: t.Runtime, Pid: t.Pid, Status: runtime.Status(t.Status),
		ExitStatus: t.ExitStatus, ExitedAt: exitedAt(t.ExitedAt), Terminal: t.GetIo().GetTerminal(), Stdout: t.GetIo().GetStdout(), Reason: t.Reason,
		Log: logFromProto(t.GetIo().GetLog()), KeepStdin: t.GetIo().GetKeepStdin(),
	}
}

// TaskEvent is a task transition, as keeld relays it from a runtime.
type TaskEvent struct {
	Namespace  string
	Runtime    string
	Topic      string // /tasks/create, /tasks/start, /tasks/exit, …
	ID         string
	ExecID     string
	Pid        uint32
	ExitStatus uint32
	ExitedAt   time.Time
	Timestamp  time.Time
}

// TaskEvents streams task events of the namespace (of every namespace
// with all) until ctx ends; errs then carries why it ended (nothing for
// ctx) and both close. The subscription is in place when it returns.
func (c *Client) TaskEvents(ctx context.Context, all bool) (<-chan TaskEvent, <-chan error, error) {
	stream, err := c.tasks().Events(ctx, &keelv1.TaskEventsRequest{All: all})
	if err != nil {
		return nil, nil, err
	}
	return subscribed(ctx, stream, func(ev *keelv1.TaskEvent) TaskEvent {
		return TaskEvent{
			Namespace: ev.Namespace, Runtime: ev.Runtime, Topic: ev.Topic, ID: ev.Id, ExecID: ev.ExecId,
			Pid: ev.Pid, ExitStatus: ev.ExitStatus, ExitedAt: exitedAt(ev.ExitedAt), Timestamp: exitedAt(ev.Timestamp),
		}
	})
}
