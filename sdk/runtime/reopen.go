package runtime

import (
	"context"
	"fmt"

	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// CapabilityReopenLog is announced by runtimes that implement LogReopener.
const CapabilityReopenLog = "reopen-log"

// LogReopener is implemented by runtimes that can reopen a task's log.
//
// The kubelet rotates a container's log by renaming the file at the CRI's
// log_path away and then asking the runtime to reopen it; the runtime
// closes the file it writes and opens the path again, creating it.
type LogReopener interface {
	// ReopenLog closes the file task id's init process logs to
	// (IO.LogPath) and opens the path again, creating it: what the
	// process writes next goes to a new file there. Each record is
	// whole in one file or the other and none is lost. NotFound for an
	// unknown task; FailedPrecondition for a task without a log, or
	// one whose output has ended.
	ReopenLog(ctx context.Context, id string) error
}

// ReopenLog reopens task id's log with rt: NotImplemented, saying so,
// when rt is no LogReopener.
func ReopenLog(ctx context.Context, rt Runtime, id string) error {
	lr, ok := rt.(LogReopener)
	if !ok {
		return fmt.Errorf("reopen log: the runtime cannot reopen a task's log (no %s capability): %w", CapabilityReopenLog, errdefs.ErrNotImplemented)
	}
	return lr.ReopenLog(ctx, id)
}

var _ LogReopener = (*client)(nil)

// ReopenLog asks the plugin; one without the capability answers
// NotImplemented (one built before it, gRPC's Unimplemented, the same
// class).
func (c *client) ReopenLog(ctx context.Context, id string) error {
	_, err := c.c.ReopenLog(ctx, &pluginv1.TaskRequest{Id: id})
	return err
}

func (s *server) ReopenLog(ctx context.Context, req *pluginv1.TaskRequest) (*pluginv1.Empty, error) {
	if err := s.call(ctx, func(rt Runtime) error { return ReopenLog(ctx, rt, req.Id) }); err != nil {
		return nil, err
	}
	return empty, nil
}
