package runtime

import (
	"encoding/json"
	"fmt"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// Conversions between the Go types and the wire. Exported ones are for
// keeld, which relays runtime types on its own API.

// stateToProto converts a TaskState for the wire.
func stateToProto(s TaskState) *pluginv1.TaskState {
	return &pluginv1.TaskState{
		Id:         s.ID,
		ExecId:     s.ExecID,
		Pid:        s.Pid,
		Status:     pluginv1.TaskStatus(s.Status),
		Stdin:      s.IO.Stdin,
		Stdout:     s.IO.Stdout,
		Stderr:     s.IO.Stderr,
		Terminal:   s.IO.Terminal,
		Log:        logToProto(s.IO),
		KeepStdin:  s.IO.KeepStdin,
		ExitStatus: s.ExitStatus,
		ExitedAt:   wire.UnixNano(s.ExitedAt),
		Reason:     s.Reason,
	}
}

// stateFromProto converts a TaskState from the wire.
func stateFromProto(p *pluginv1.TaskState) TaskState {
	if p == nil {
		return TaskState{}
	}
	return TaskState{
		ID:         p.Id,
		ExecID:     p.ExecId,
		Pid:        p.Pid,
		Status:     Status(p.Status),
		IO:         ioFromProto(p.Stdin, p.Stdout, p.Stderr, p.Terminal, p.KeepStdin, p.Log),
		ExitStatus: p.ExitStatus,
		ExitedAt:   wire.Time(p.ExitedAt),
		Reason:     p.Reason,
	}
}

// eventToProto converts an Event for the wire.
func eventToProto(e Event) *pluginv1.TaskEvent {
	return &pluginv1.TaskEvent{
		Topic:      e.Topic,
		Id:         e.ID,
		ExecId:     e.ExecID,
		Pid:        e.Pid,
		ExitStatus: e.ExitStatus,
		ExitedAt:   wire.UnixNano(e.ExitedAt),
		Timestamp:  wire.UnixNano(e.Timestamp),
	}
}

// eventFromProto converts an Event from the wire.
func eventFromProto(p *pluginv1.TaskEvent) Event {
	if p == nil {
		return Event{}
	}
	return Event{
		Topic:      p.Topic,
		ID:         p.Id,
		ExecID:     p.ExecId,
		Pid:        p.Pid,
		ExitStatus: p.ExitStatus,
		ExitedAt:   wire.Time(p.ExitedAt),
		Timestamp:  wire.Time(p.Timestamp),
	}
}

func exitToProto(e ExitStatus) *pluginv1.ExitStatus {
	return &pluginv1.ExitStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: wire.UnixNano(e.ExitedAt)}
}

func exitFromProto(p *pluginv1.ExitStatus) ExitStatus {
	if p == nil {
		return ExitStatus{}
	}
	return ExitStatus{Pid: p.Pid, Status: p.ExitStatus, ExitedAt: wire.Time(p.ExitedAt)}
}

// marshalJSON encodes v, or nothing when v is nil.
func marshalJSON[P any](what string, v *P) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	return b, nil
}

// unmarshalJSON decodes b, or returns nil when it is empty.
func unmarshalJSON[P any](what string, b []byte) (*P, error) {
	if len(b) == 0 {
		return nil, nil
	}
	v := new(P)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	return v, nil
}
