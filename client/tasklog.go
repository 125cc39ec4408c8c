package client

import "context"

// ReopenLog closes the file the task logs to (cio.Log) and opens its path
// again, creating it: after renaming the log away (as the kubelet rotates
// a container's log), what the task writes next goes to a new file at the
// path. FailedPrecondition for a task without a log file or whose output
// has ended; NotImplemented when its runtime cannot reopen logs.
func (t *Task) ReopenLog(ctx context.Context) error {
	_, err := t.c.tasks().ReopenLog(ctx, t.req())
	return err
}
