package client

import (
	"testing"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// TestTaskStatusWire: keel.v1's TaskStatus numbers the states as
// sdk/runtime's Status does (keeld and the client convert by number), and
// each prints as before the wire carried it as text.
func TestTaskStatusWire(t *testing.T) {
	tests := []struct {
		wire keelv1.TaskStatus
		want runtime.Status
		text string
	}{
		{keelv1.TaskStatus_TASK_STATUS_UNKNOWN, runtime.StatusUnknown, "unknown"},
		{keelv1.TaskStatus_TASK_STATUS_CREATED, runtime.StatusCreated, "created"},
		{keelv1.TaskStatus_TASK_STATUS_RUNNING, runtime.StatusRunning, "running"},
		{keelv1.TaskStatus_TASK_STATUS_STOPPED, runtime.StatusStopped, "stopped"},
		{keelv1.TaskStatus_TASK_STATUS_PAUSED, runtime.StatusPaused, "paused"},
		{keelv1.TaskStatus_TASK_STATUS_PAUSING, runtime.StatusPausing, "pausing"},
	}
	if len(tests) != len(keelv1.TaskStatus_name) {
		t.Fatalf("keel.v1 has %d task states, the test %d", len(keelv1.TaskStatus_name), len(tests))
	}
	for _, tt := range tests {
		got := taskFromProto(&keelv1.Task{Status: tt.wire}).Status
		if got != tt.want || got.String() != tt.text || keelv1.TaskStatus(tt.want) != tt.wire {
			t.Errorf("%s: %v (%q), want %v (%q)", tt.wire, got, got, tt.want, tt.text)
		}
	}
}
