package shimclient_test

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shimclient"
	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// olderShim answers as shims of plugins before the shim executable did:
// net/rpc's server, replies made of sdk/runtime's own types.
type olderShim struct{ at time.Time }

func (o olderShim) State(_ shim.ProcessRequest, reply *struct{ State keelruntime.TaskState }) error {
	reply.State = keelruntime.TaskState{ID: "t", Pid: 7, Status: keelruntime.StatusRunning,
		IO: keelruntime.IO{Stdout: "/out", Terminal: true}, ExitStatus: 3, ExitedAt: o.at}
	return nil
}

func (o olderShim) Events(_ shim.EventsRequest, reply *struct {
	Events []struct {
		Seq   uint64
		Event keelruntime.Event
	}
}) error {
	reply.Events = append(reply.Events, struct {
		Seq   uint64
		Event keelruntime.Event
	}{4, keelruntime.Event{Topic: keelruntime.TopicExit, ID: "t", ExecID: "e", Pid: 7, ExitStatus: 3, ExitedAt: o.at, Timestamp: o.at}})
	return nil
}

func (o olderShim) Pids(_ shim.Empty, reply *struct{ Processes []keelruntime.ProcessInfo }) error {
	reply.Processes = []keelruntime.ProcessInfo{{Pid: 7, ExecID: "e"}}
	return nil
}

func (o olderShim) Kill(shim.KillRequest, *shim.Empty) error {
	return errors.New("5:task \"t\": not found")
}

// TestOlderShimAdoptable: the plugin reads a shim of an older plugin, which
// sent sdk/runtime's types over net/rpc, into the shim's wire types.
func TestOlderShimAdoptable(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	srv := rpc.NewServer()
	if err := srv.RegisterName(shim.ServiceName, olderShim{at}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go srv.Accept(lis)
	ctx := context.Background()
	c, err := shimclient.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var st shim.StateReply
	if err := c.Call(ctx, "State", shim.ProcessRequest{}, &st); err != nil {
		t.Fatal(err)
	}
	want := shim.TaskState{ID: "t", Pid: 7, Status: shim.StatusRunning, IO: shim.IO{Stdout: "/out", Terminal: true}, ExitStatus: 3, ExitedAt: at}
	if !st.State.ExitedAt.Equal(at) || st.State.ID != want.ID || st.State.Status != want.Status || st.State.IO != want.IO || st.State.ExitStatus != 3 || st.State.Pid != 7 {
		t.Errorf("state %+v, want %+v", st.State, want)
	}
	var evs shim.EventsReply
	if err := c.Call(ctx, "Events", shim.EventsRequest{}, &evs); err != nil {
		t.Fatal(err)
	}
	if len(evs.Events) != 1 || evs.Events[0].Seq != 4 || evs.Events[0].Event.Topic != shim.TopicExit || evs.Events[0].Event.ExecID != "e" ||
		!evs.Events[0].Event.Timestamp.Equal(at) || evs.Events[0].Event.ExitStatus != 3 {
		t.Errorf("events %+v", evs.Events)
	}
	var pids shim.PidsReply
	if err := c.Call(ctx, "Pids", shim.Empty{}, &pids); err != nil {
		t.Fatal(err)
	}
	if len(pids.Processes) != 1 || pids.Processes[0] != (shim.ProcessInfo{Pid: 7, ExecID: "e"}) {
		t.Errorf("pids %+v", pids.Processes)
	}
	err = c.Call(ctx, "Kill", shim.KillRequest{}, &shim.Empty{})
	if !errdefs.IsNotFound(err) || err.Error() != `task "t": not found` {
		t.Errorf("kill: %v, want NotFound", err)
	}
	// A call the older shim lacks is NotImplemented, naming it.
	err = c.Call(ctx, "ReopenLog", shim.Empty{}, &shim.Empty{})
	if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "Shim.ReopenLog") {
		t.Errorf("reopen log on a shim without it: %v, want NotImplemented naming the call", err)
	}
}
