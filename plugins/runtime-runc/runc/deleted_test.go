package runc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/rpc"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shimclient"
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
			c, err := shimclient.Dial(ctx, socketOf(t, state, id))
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

// TestShimShutdown: the shim answers Shutdown, and a call waiting when
// Shutdown comes, before it exits; a connection left open does not hold it.
func TestShimShutdown(t *testing.T) {
	rt, state := openDirect(t)
	ctx := context.Background()
	const id = "shutdown"
	mounts, err := fixture.BusyboxRootfs(filepath.Join(t.TempDir(), "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, keelruntime.CreateOpts{ID: id, Spec: fixture.RuntimeSpec("sleep", "60"), Rootfs: mounts}); err != nil {
		t.Fatal(err)
	}
	sp := shimPid(t, state, id)
	pidfd, err := unix.PidfdOpen(sp, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	rt.Close() // the plugin would end the shim itself

	socket := socketOf(t, state, id)
	idle, err := shimclient.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := idle.Call(ctx, "Delete", shim.ProcessRequest{}, &shim.ExitReply{}); err != nil {
		t.Fatal(err)
	}
	// net/rpc itself: Go returns once the request is written, so the shim
	// reads the Events call before Shutdown.
	c, err := rpc.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := c.Go("Shim.Events", shim.EventsRequest{After: 1 << 62, Timeout: time.Minute}, &shim.EventsReply{}, nil)
	if err := c.Call("Shim.Shutdown", shim.Empty{}, &shim.Empty{}); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case <-events.Done:
		if events.Error != nil {
			t.Errorf("events waiting at shutdown: %v, want an answer", events.Error)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("events waiting at shutdown: no answer in 20s")
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 20_000); err != nil || n != 1 {
		t.Fatalf("shim pid %d still runs 20s after shutdown (poll %d, %v)", sp, n, err)
	}
	if err := idle.Call(ctx, "State", shim.ProcessRequest{}, &shim.StateReply{}); !errors.Is(err, shimclient.ErrConnection) {
		t.Errorf("call on a connection open across the shim's end: %v, want %v", err, shimclient.ErrConnection)
	}
}
