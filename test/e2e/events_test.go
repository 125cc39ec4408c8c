package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client"
)

// eventsWindow is the window of TestEvents's keeld: small, so that the
// test can outrun it.
const eventsWindow = 256

// nextEvent reads one event, failing the test after settle or when the stream
// ends.
func nextEvent(t *testing.T, evs <-chan client.Event, errs <-chan error) client.Event {
	t.Helper()
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatalf("event stream ended: %v", <-errs)
		}
		return ev
	case <-time.After(settle):
		t.Fatalf("no event within %s", settle)
	}
	panic("unreachable")
}

// readEvents reads events until done says the last one read is enough.
func readEvents(t *testing.T, evs <-chan client.Event, errs <-chan error, done func([]client.Event) bool) []client.Event {
	t.Helper()
	var got []client.Event
	for len(got) == 0 || !done(got) {
		got = append(got, nextEvent(t, evs, errs))
	}
	return got
}

// sawEvent says whether evs has an event of topic whose payload field id (or
// name) is id.
func sawEvent(evs []client.Event, topic, id string) bool {
	return slices.ContainsFunc(evs, func(ev client.Event) bool { return ev.Topic == topic && payloadID(ev) == id })
}

func payloadID(ev client.Event) string {
	switch p := ev.Payload.(type) {
	case *keelv1.ImageEvent:
		return p.Name
	case *keelv1.ContainerEvent:
		return p.Id
	case *keelv1.TaskEvent:
		return p.Id
	}
	return ""
}

// TestEvents: a pull and a run publish their topics in order with
// consecutive sequence numbers; a replay from a sequence number gives
// exactly the events after it; filters select by topic and payload; a
// subscriber that stops reading holds nothing up and is told how many
// events it lost; `keel events --format json` streams the same.
func TestEvents(t *testing.T) {
	t.Parallel()
	k := newRunKeeld(t, "", fmt.Sprintf("events {\n  window = %d\n}\n", eventsWindow))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := k.client(t, "default")
	live, liveErrs, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A subscriber that never reads, on a connection that buffers little
	// (fixed 64 KiB flow-control windows), so that it falls behind.
	slow, err := client.New(k.env.socket, client.WithDialOptions(grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	stalled, stalledErrs, err := slow.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	k.ok("image", "pull", "-q", k.ref)
	pulled := readEvents(t, live, liveErrs, func(evs []client.Event) bool { return sawEvent(evs, "/images/create", k.ref) })
	afterPull := pulled[len(pulled)-1].Sequence
	if r := k.keel("run", "--rm", k.ref, "ev", "/bin/busybox", "true"); r.code != 0 {
		t.Fatalf("run: %v", r)
	}
	ran := readEvents(t, live, liveErrs, func(evs []client.Event) bool {
		return sawEvent(evs, "/containers/delete", "ev") && sawEvent(evs, "/tasks/delete", "ev")
	})
	all := append(pulled, ran...)

	t.Run("ordered", func(t *testing.T) {
		for i, ev := range all {
			if ev.Missed != nil || ev.Sequence != all[0].Sequence+uint64(i) || ev.Epoch != all[0].Epoch {
				t.Fatalf("event %d: %+v, want sequence %d", i, ev, all[0].Sequence+uint64(i))
			}
		}
		// Causal order: the unpack before the record; the container's
		// snapshot before it; the task's life in order (its delete is
		// relayed from the runtime and may follow the container's).
		want := []string{
			"/snapshot/prepare", "/snapshot/commit", "/images/create",
			"/snapshot/prepare", "/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/containers/delete",
		}
		var topics []string
		for _, ev := range all {
			topics = append(topics, ev.Topic)
		}
		rest := topics
		for _, w := range want {
			i := slices.Index(rest, w)
			if i < 0 {
				t.Fatalf("topics %v lack %v in this order", topics, want)
			}
			rest = rest[i+1:]
		}
		for _, ev := range all {
			if keeldOwn := strings.HasPrefix(ev.Topic, "/plugins/") || ev.Topic == "/gc/run"; keeldOwn != (ev.Namespace == "") || !keeldOwn && ev.Namespace != "default" {
				t.Errorf("%s in namespace %q", ev.Topic, ev.Namespace)
			}
		}
	})

	t.Run("replay", func(t *testing.T) {
		evs, errs, err := c.Subscribe(ctx, client.WithEventsSince(afterPull, all[0].Epoch))
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range ran {
			got := nextEvent(t, evs, errs)
			if got.Sequence != want.Sequence || got.Topic != want.Topic || payloadID(got) != payloadID(want) {
				t.Fatalf("replayed event %d: %+v, want %+v", i, got, want)
			}
		}
	})

	t.Run("filter", func(t *testing.T) {
		evs, errs, err := c.Subscribe(ctx, client.WithEventsSince(0, ""),
			client.WithEventFilters(`topic~="^/tasks/",event.id==ev`, `topic=="/containers/create"`))
		if err != nil {
			t.Fatal(err)
		}
		got := readEvents(t, evs, errs, func(evs []client.Event) bool { return sawEvent(evs, "/tasks/delete", "ev") })
		var topics []string
		for _, ev := range got {
			topics = append(topics, ev.Topic)
		}
		if want := []string{"/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}; !slices.Equal(topics, want) {
			t.Fatalf("filtered topics %v, want %v", topics, want)
		}
		if _, _, err := c.Subscribe(ctx, client.WithEventFilters("topic==")); err == nil {
			t.Fatal("a filter that does not parse was accepted")
		}
	})

	// Many events, more than the window and the slow connection hold.
	images := keelv1.NewImagesClient(c.Conn())
	const updates = 3000
	pad := strings.Repeat("x", 200)
	for i := range updates {
		_, err := images.Update(ctx, &keelv1.UpdateImageRequest{
			Image:      &keelv1.Image{Name: k.ref, Labels: map[string]string{"n": fmt.Sprint(i, pad)}},
			FieldPaths: []string{"labels.n"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The live subscriber read along: it is at the last update.
	updated := readEvents(t, live, liveErrs, func(evs []client.Event) bool {
		p, ok := evs[len(evs)-1].Payload.(*keelv1.ImageEvent)
		return ok && p.Labels["n"] == fmt.Sprint(updates-1, pad)
	})
	last := updated[len(updated)-1].Sequence

	t.Run("stalled subscriber", func(t *testing.T) {
		// Every event up to last is either received, in order, or
		// counted by a marker; at least one marker.
		want, markers := all[0].Sequence, 0
		for want <= last {
			ev := nextEvent(t, stalled, stalledErrs)
			if ev.Missed != nil {
				markers++
				want += ev.Missed.Count
			}
			if ev.Sequence != want {
				t.Fatalf("event %+v, want sequence %d", ev, want)
			}
			if ev.Missed == nil {
				want++
			}
		}
		if markers == 0 {
			t.Fatalf("a subscriber that read nothing through %d events was told of no loss", last-all[0].Sequence+1)
		}
	})

	t.Run("left the window", func(t *testing.T) {
		evs, errs, err := c.Subscribe(ctx, client.WithEventsSince(afterPull, ""))
		if err != nil {
			t.Fatal(err)
		}
		m := nextEvent(t, evs, errs)
		if m.Missed == nil || m.Missed.Count != last-eventsWindow-afterPull || m.Sequence != last-eventsWindow+1 {
			t.Fatalf("first envelope %+v, want a marker of %d missed", m, last-eventsWindow-afterPull)
		}
		if ev := nextEvent(t, evs, errs); ev.Sequence != m.Sequence || ev.Topic != "/images/update" {
			t.Fatalf("after the marker: %+v", ev)
		}
	})

	t.Run("restarted epoch", func(t *testing.T) {
		evs, errs, err := c.Subscribe(ctx, client.WithEventsSince(last, "an-older-keeld"))
		if err != nil {
			t.Fatal(err)
		}
		if m := nextEvent(t, evs, errs); m.Missed == nil || !m.Missed.Restarted {
			t.Fatalf("first envelope %+v, want a restarted marker", m)
		}
	})

	t.Run("cli json", func(t *testing.T) {
		cctx, stop := context.WithTimeout(ctx, settle) // ends the command, and so the read, if lines lack
		cmd := exec.CommandContext(cctx, filepath.Join(binDir, "keel"), "--address", k.env.socket,
			"events", "--format", "json", "--since", "0", "--filter", `topic=="/images/update"`)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			stop()
			_ = cmd.Wait() // killed by stop
		}()
		lines := bufio.NewScanner(out)
		lines.Buffer(nil, 1<<20)
		type line struct {
			Sequence  uint64 `json:"sequence"`
			Namespace string `json:"namespace"`
			Topic     string `json:"topic"`
			Missed    *uint64
			Event     struct {
				Name   string            `json:"name"`
				Labels map[string]string `json:"labels"`
			} `json:"event"`
		}
		var got []line
		for len(got) < 3 && lines.Scan() {
			var l line
			if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
				t.Fatalf("%q: %v", lines.Text(), err)
			}
			got = append(got, l)
		}
		if len(got) < 3 {
			t.Fatalf("keel events printed %d lines: %v", len(got), lines.Err())
		}
		if got[0].Missed == nil || *got[0].Missed != last-eventsWindow {
			t.Fatalf("first line %+v, want missed %d", got[0], last-eventsWindow)
		}
		for i, l := range got[1:] {
			if l.Topic != "/images/update" || l.Namespace != "default" || l.Event.Name != k.ref || l.Event.Labels["n"] == "" || l.Sequence != last-eventsWindow+1+uint64(i) {
				t.Fatalf("line %d: %+v", i+1, l)
			}
		}
	})

	// Last: what it publishes comes after the window the subtests above count on.
	t.Run("plugins and gc", func(t *testing.T) {
		evs, errs, err := c.Subscribe(ctx, client.WithEventFilters(`topic~="^/plugins/",event.name==local`, `topic=="/gc/run"`))
		if err != nil {
			t.Fatal(err)
		}
		k.ok("gc")
		ev := nextEvent(t, evs, errs)
		if ev.Topic == "/plugins/started" {
			// The content plugin had stopped for being idle: keel gc
			// (on demand, unlike the tick) calls every plugin, and
			// started it again.
			ev = nextEvent(t, evs, errs)
		}
		if ev.Topic != "/gc/run" || ev.Namespace != "" {
			t.Fatalf("after keel gc: %+v", ev)
		}
		pid := k.plugins()["content.local"].Pid
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"/plugins/exited", "/plugins/restarted"} {
			ev := nextEvent(t, evs, errs)
			p, ok := ev.Payload.(*keelv1.PluginEvent)
			if ev.Topic != want || !ok || p.Kind != "content" {
				t.Fatalf("after killing the content plugin: %+v, want %s", ev, want)
			}
			if want == "/plugins/exited" && int(p.Pid) != pid {
				t.Errorf("exited pid %d, want %d", p.Pid, pid)
			}
		}
	})
}

// TestEventsRecords: namespaces, content and snapshots publish what the
// CLI changes, namespaced and with their payloads.
func TestEventsRecords(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	c := k.client(t, "default")
	evs, errs, err := c.Subscribe(t.Context(), client.WithEventFilters(`topic~="^/(namespaces|content|snapshot)/"`))
	if err != nil {
		t.Fatal(err)
	}
	k.ok("namespace", "create", "evns", "team=a")
	k.ok("namespace", "label", "evns", "team=b")
	r := k.keelIn(strings.NewReader("a blob"), "-n", "evns", "content", "ingest", "evblob")
	if r.code != 0 {
		t.Fatalf("ingest: %v", r)
	}
	dgst := strings.TrimSpace(r.stdout)
	k.ok("-n", "evns", "content", "rm", dgst)
	k.ok("-n", "evns", "snapshot", "prepare", "evsnap")
	k.ok("-n", "evns", "snapshot", "commit", "evsnap-done", "evsnap")
	k.ok("-n", "evns", "snapshot", "rm", "evsnap-done")
	k.ok("namespace", "rm", "evns")
	for _, want := range []struct {
		topic   string
		payload proto.Message
	}{
		{"/namespaces/create", &keelv1.NamespaceEvent{Name: "evns", Labels: map[string]string{"team": "a"}}},
		{"/namespaces/update", &keelv1.NamespaceEvent{Name: "evns", Labels: map[string]string{"team": "b"}}},
		{"/content/delete", &keelv1.ContentEvent{Digest: dgst}},
		{"/snapshot/prepare", &keelv1.SnapshotEvent{Snapshotter: "native", Key: "evsnap"}},
		{"/snapshot/commit", &keelv1.SnapshotEvent{Snapshotter: "native", Key: "evsnap", Name: "evsnap-done"}},
		{"/snapshot/remove", &keelv1.SnapshotEvent{Snapshotter: "native", Key: "evsnap-done"}},
		{"/namespaces/delete", &keelv1.NamespaceEvent{Name: "evns"}},
	} {
		ev := nextEvent(t, evs, errs)
		if ev.Topic != want.topic || ev.Namespace != "evns" || !proto.Equal(ev.Payload, want.payload) {
			t.Fatalf("event %s in %q: %v, want %s: %v", ev.Topic, ev.Namespace, ev.Payload, want.topic, want.payload)
		}
	}
}
