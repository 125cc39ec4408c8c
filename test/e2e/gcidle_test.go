package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client"
)

// TestGCIdlePlugins: keeld's periodic collection leaves the plugins
// stopped for idleness alone: with a tick shorter than the idle stop, every
// plugin still stops (the tick does not keep one running), and tick after
// tick none is started again. A `keel image rm` then still removes the
// image's blobs and snapshots from the plugins, starting those two only.
func TestGCIdlePlugins(t *testing.T) {
	t.Parallel()
	k := newRunKeeldEdit(t, "", "gc {\n  interval = \"200ms\"\n}\n", func(cfg string) string {
		return strings.ReplaceAll(cfg, "\n  path = \"keel-", "\n  idle_stop = \"1s\"\n  path = \"keel-")
	})
	blobs := filepath.Join(k.env.root, "plugins", "content.local", "blobs", "sha256")
	snaps := filepath.Join(k.env.root, "plugins", "snapshotter.native", "snapshots")
	entries := func(dir string) int {
		des, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return len(des)
	}
	allIdle := func() bool {
		for _, p := range k.plugins() {
			if p.State != "idle" || p.Pid != 0 {
				return false
			}
		}
		return true
	}

	k.ok("image", "pull", "-q", k.ref)
	if entries(blobs) == 0 || entries(snaps) == 0 {
		t.Fatalf("after the pull: %d blobs, %d snapshots in the plugins", entries(blobs), entries(snaps))
	}
	waitFor(t, allIdle)

	c := k.client(t, "default")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, errs, err := c.Subscribe(ctx, client.WithEventFilters(`topic~="^/plugins/"`, `topic=="/gc/run"`))
	if err != nil {
		t.Fatal(err)
	}
	// Ticks, each a collection that changed nothing; no plugin event.
	for ticks := 0; ticks < 10; {
		ev := nextEvent(t, evs, errs)
		if ev.Topic != "/gc/run" {
			t.Fatalf("after %d idle ticks: %s %+v: a tick woke a plugin", ticks, ev.Topic, ev.Payload)
		}
		if r, ok := ev.Payload.(*keelv1.GCRunEvent); !ok || len(r.Removed) > 0 || len(r.Errors) > 0 {
			t.Fatalf("idle tick: %+v", ev.Payload)
		}
		ticks++
	}
	if !allIdle() {
		t.Fatalf("plugins after the idle ticks: %+v", k.plugins())
	}

	// An image's removal triggers a collection that starts the plugins
	// holding the image (content and native), and no other.
	k.ok("image", "rm", k.ref)
	var started []string
	for removed := map[string]uint32{}; removed["content"] == 0 || removed["snapshot"] == 0; {
		ev := nextEvent(t, evs, errs)
		switch p := ev.Payload.(type) {
		case *keelv1.PluginEvent:
			started = append(started, ev.Topic+" "+p.Kind+"."+p.Name)
		case *keelv1.GCRunEvent:
			if len(p.Errors) > 0 {
				t.Fatalf("collection after image rm: %v", p.Errors)
			}
			for kind, n := range p.Removed {
				removed[kind] += n
			}
		}
	}
	for _, s := range started {
		if !strings.HasSuffix(s, " content.local") && !strings.HasSuffix(s, " snapshotter.native") {
			t.Errorf("after image rm: %s (all plugin events: %v)", s, started)
		}
	}
	waitFor(t, func() bool { return entries(blobs) == 0 && entries(snaps) == 0 })
}
