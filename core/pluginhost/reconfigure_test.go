package pluginhost_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestReconfigure: a new config block restarts the running plugin alone
// with it, through the same connection; an unchanged one changes nothing;
// one the plugin refuses is returned, the plugin running again with its
// previous config; a plugin with no process takes the new config at its
// next start.
func TestReconfigure(t *testing.T) {
	t.Parallel()
	memsnap := filepath.Join(bin, "memsnap")
	s := spec(t, "mem", memsnap)
	s.Config = []byte(`{"greeting": "one"}`)
	lazy := spec(t, "lazy", memsnap)
	lazy.Lazy = true
	h := startHost(t, []pluginhost.Spec{s, lazy})
	sn := snapshotter(t, h, "mem")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	status := func(name string) pluginhost.Status {
		t.Helper()
		for _, st := range h.Plugins() {
			if st.Name == name {
				return st
			}
		}
		t.Fatalf("no plugin %s", name)
		return pluginhost.Status{}
	}
	greeting := func(sp pluginhost.Spec) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(sp.Root, "greeting"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// answers checks that a call through the connection taken before
	// reaches a running plugin.
	answers := func() {
		t.Helper()
		if _, err := sn.Stat(ctx, "none"); !errdefs.IsNotFound(err) {
			t.Fatalf("Stat through the connection: %v, want NotFound from the plugin", err)
		}
	}

	before := status("mem")
	for _, tc := range []struct {
		name         string
		config       string
		restarted    bool
		refused      bool
		wantGreeting string
		samePid      bool
	}{
		{name: "new config", config: `{"greeting": "two"}`, restarted: true, wantGreeting: "two"},
		{name: "unchanged", config: `{ "greeting":"two" }`, wantGreeting: "two", samePid: true},
		{name: "refused", config: `{"bogus": 1}`, restarted: true, refused: true, wantGreeting: "two"},
		{name: "after a refusal", config: `{"greeting": "three"}`, restarted: true, wantGreeting: "three"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restarted, err := h.Reconfigure(ctx, "snapshotter", "mem", []byte(tc.config))
			var se *pluginhost.StartError
			switch {
			case tc.refused && (!errdefs.IsInvalidArgument(err) || !errors.As(err, &se) || se.Setting != "config"):
				t.Fatalf("Reconfigure %s: %v, want the plugin's InvalidArgument as a config StartError", tc.config, err)
			case !tc.refused && err != nil:
				t.Fatalf("Reconfigure %s: %v", tc.config, err)
			}
			if restarted != tc.restarted {
				t.Errorf("restarted %v, want %v", restarted, tc.restarted)
			}
			now := status("mem")
			if now.State != pluginhost.StateRunning || now.Restarts != 0 {
				t.Errorf("after Reconfigure: %+v, want running and no restart counted", now)
			}
			if (now.Pid == before.Pid) != tc.samePid {
				t.Errorf("pid %d, was %d; want the same: %v", now.Pid, before.Pid, tc.samePid)
			}
			if !tc.samePid {
				waitFor(t, "the old process to be gone", time.Minute, func() bool { return !alive(before.Pid) })
			}
			if g := greeting(s); g != tc.wantGreeting {
				t.Errorf("greeting %q, want %q", g, tc.wantGreeting)
			}
			answers()
			before = now
		})
	}

	// Calls made while the plugin restarts wait for the new process.
	t.Run("calls meanwhile", func(t *testing.T) {
		stop := make(chan struct{})
		errs := make(chan error, 1)
		go func() {
			defer close(errs)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := sn.Stat(ctx, "none"); !errdefs.IsNotFound(err) {
					errs <- err
					return
				}
			}
		}()
		_, err := h.Reconfigure(ctx, "snapshotter", "mem", []byte(`{"greeting": "four"}`))
		close(stop)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-errs; err != nil {
			t.Errorf("a call during the restart: %v, want it to wait for the new process", err)
		}
	})

	t.Run("no process", func(t *testing.T) {
		restarted, err := h.Reconfigure(ctx, "snapshotter", "lazy", []byte(`{"greeting": "later"}`))
		if err != nil || restarted {
			t.Fatalf("Reconfigure of a lazy plugin: %v, %v; want nil, not restarted", restarted, err)
		}
		if st := status("lazy"); st.State != pluginhost.StateIdle {
			t.Fatalf("lazy plugin after Reconfigure: %+v, want idle", st)
		}
		if _, err := snapshotter(t, h, "lazy").Stat(ctx, "none"); !errdefs.IsNotFound(err) {
			t.Fatalf("first call: %v, want NotFound from the plugin", err)
		}
		if g := greeting(lazy); g != "later" {
			t.Errorf("greeting %q, want later", g)
		}
	})
	if _, err := h.Reconfigure(ctx, "snapshotter", "none", []byte(`{}`)); !errdefs.IsNotFound(err) {
		t.Errorf("Reconfigure of an unknown plugin: %v, want NotFound", err)
	}
}
