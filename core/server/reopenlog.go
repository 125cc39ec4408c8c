package server

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/emptypb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// ReopenLog has the runtime reopen the task's log file (the CRI's
// ReopenContainerLog, for every embedder): only a task created with a log
// has one.
func (ts tasksService) ReopenLog(ctx context.Context, req *keelv1.TaskRequest) (*emptypb.Empty, error) {
	if req.ExecId != "" {
		return nil, fmt.Errorf("exec %q of task %q: only a task's init process has a log file: %w", req.ExecId, req.Id, errdefs.ErrInvalidArgument)
	}
	return ts.simple(ctx, req.Id, func(rt runtime.Runtime, tid string) error {
		st, err := rt.State(ctx, tid, "")
		if err != nil {
			return err
		}
		if st.IO.LogPath == "" {
			return fmt.Errorf("task %q has no log file: %w", req.Id, errdefs.ErrFailedPrecondition)
		}
		return runtime.ReopenLog(ctx, rt, tid)
	})
}
