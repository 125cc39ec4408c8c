package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// btrfsPlugins run the btrfs snapshotter as keeld's only one.
const btrfsPlugins = `
default_snapshotter = "btrfs"
plugin "snapshotter" "btrfs" {
  path = "keel-snapshotter-btrfs"
}
plugin "content" "local" {
  path = "keel-content-local"
}
`

// TestBtrfsConformance runs the whole snapshotter suite through keeld:
// each case starts a keeld whose root is the case's root on a loopback
// btrfs, so the plugin's root (<root>/plugins/snapshotter.btrfs) is on
// btrfs too; a restart in a case is a keeld restart on the same root.
func TestBtrfsConformance(t *testing.T) {
	t.Parallel()
	dir := fixture.LoopbackBtrfs(t)
	snapshottest.Run(conformance.Go(t), keeldSnapshotter(btrfsPlugins, "btrfs"), conformance.WithRootDir(dir))
}

// keeldSnapshotter opens the snapshotter name of a keeld started with
// plugins on the case's root, through the client, as any keel user would.
func keeldSnapshotter(plugins, name string) conformance.Opener[snapshot.Snapshotter] {
	return func(ctx context.Context, t conformance.T, root string) (snapshot.Snapshotter, error) {
		t.Helper()
		// Config, log, state and socket in a short dir: the socket path
		// must stay under 108 bytes.
		dir, err := os.MkdirTemp("", "kb")
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		socket := filepath.Join(dir, "k.sock")
		cfg := filepath.Join(dir, "keeld.hcl")
		text := fmt.Sprintf("root = %q\nstate = %q\nplugin_dir = %q\ngrpc {\n  address = %q\n}\n%s",
			root, filepath.Join(dir, "state"), binDir, socket, plugins)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(dir, "keeld.log"))
		if err != nil {
			return nil, err
		}
		defer log.Close()
		cmd := exec.Command(filepath.Join(binDir, "keeld"), "--config", cfg)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		stop := sync.OnceValue(func() error {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
				return nil
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
				return errors.New("keeld did not stop within 10s of SIGTERM")
			}
		})
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				b, _ := os.ReadFile(log.Name())
				t.Logf("keeld log:\n%s", b)
			}
		})
		c, err := readyClient(ctx, socket, done)
		if err != nil {
			return nil, err
		}
		plugins, err := c.Plugins(ctx)
		if err != nil {
			c.Close()
			return nil, err
		}
		for _, p := range plugins {
			if p.Kind == "snapshotter" && p.Name == name {
				conformance.ReportCapabilities(t, p.Capabilities)
			}
		}
		return &keeldSnapshot{Snapshotter: c.SnapshotService(name), close: func() error {
			return errors.Join(c.Close(), stop())
		}}, nil
	}
}

// readyClient connects to keeld at socket once it answers Version.
func readyClient(ctx context.Context, socket string, exited <-chan struct{}) (*client.Client, error) {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return nil, errors.New("keeld exited before serving")
		default:
		}
		if _, last = os.Stat(socket); last == nil {
			c, err := client.New(socket, client.WithTimeout(time.Second))
			if err == nil {
				if _, last = c.Version(ctx); last == nil {
					return c, nil
				}
				c.Close()
			} else {
				last = err
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil, fmt.Errorf("keeld did not answer within 20s: %w", last)
}

// keeldSnapshot is keeld's snapshot service whose Close stops keeld.
type keeldSnapshot struct {
	snapshot.Snapshotter
	close func() error
}

var _ snapshot.Cleaner = (*keeldSnapshot)(nil)

func (k *keeldSnapshot) Cleanup(ctx context.Context) error {
	return k.Snapshotter.(snapshot.Cleaner).Cleanup(ctx)
}

func (k *keeldSnapshot) Close() error {
	return errors.Join(k.Snapshotter.Close(), k.close())
}
