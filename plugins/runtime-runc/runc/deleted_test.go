package runc_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// TestDeletedUnderDeadPlugin: the plugin dies after its shim deleted the
// task but before it let the shim go (its Shutdown call), with the delete
// event forwarded and acknowledged or not. The restarted plugin must not
// keep the task, unknown forever: the shim ends, and the task is gone.
func TestDeletedUnderDeadPlugin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked bool
	}{
		{"delete event pending", false},
		{"delete event acknowledged", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, state := openDirect(t)
			ctx := context.Background()
			const id = "deleted"
			mounts, err := fixture.BusyboxRootfs(filepath.Join(t.TempDir(), "rootfs"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rt.Create(ctx, keelruntime.CreateOpts{ID: id, Spec: fixture.RuntimeSpec("sleep", "60"), Rootfs: mounts}); err != nil {
				t.Fatal(err)
			}
			sp := shimPid(t, state, id)
			t.Cleanup(func() {
				if running(sp) {
					t.Errorf("shim pid %d still runs", sp)
				}
			})
			rt.Close()

			// What the dead plugin did last: the shim's Delete, and
			// perhaps the acknowledgement of the delete event.
			c, err := shim.Dial(ctx, socketOf(t, state, id))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Call(ctx, "Delete", shim.ProcessRequest{}, &shim.ExitReply{}); err != nil {
				t.Fatal(err)
			}
			if tc.acked {
				var evs shim.EventsReply
				if err := c.Call(ctx, "Events", shim.EventsRequest{Timeout: time.Millisecond}, &evs); err != nil || len(evs.Events) == 0 {
					t.Fatalf("events: %v, %v", evs, err)
				}
				last := evs.Events[len(evs.Events)-1]
				if last.Event.Topic != keelruntime.TopicDelete {
					t.Fatalf("last event %+v, want the delete", last)
				}
				c.Call(ctx, "Events", shim.EventsRequest{After: last.Seq, Timeout: time.Millisecond}, &shim.EventsReply{})
			}
			c.Close()

			rt = reopenDirect(t, state)
			deadline := time.Now().Add(10 * time.Second)
			for {
				list, err := rt.List(ctx)
				if err == nil && len(list) == 0 && !running(sp) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the restart: tasks %+v, %v; shim running %v; want no task and the shim gone", list, err, running(sp))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if fileExists(filepath.Join(state, "tasks", id)) {
				t.Errorf("the deleted task's dir is left")
			}
		})
	}
}

// socketOf is the shim socket of task id, from its task.json.
func socketOf(t *testing.T, state, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "tasks", id, shim.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg shim.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Socket
}
