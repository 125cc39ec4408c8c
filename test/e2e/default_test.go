package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// defaultDirs are what keeld uses with no config file: its root, its state
// (and socket), and where it looks for the file.
var defaultDirs = []string{"/var/lib/keel", "/run/keel", "/etc/keel"}

// defaultScript runs inside a private mount namespace: fresh tmpfs over the
// default directories, keeld with no config, then the CLI at the default
// socket; keeld is stopped with SIGTERM at the end.
const defaultScript = `
set -eu
for d in /var/lib/keel /run/keel /etc/keel; do
  mount -t tmpfs -o mode=0755 keel-e2e "$d"
done
if [ "$ROOT_FS" = overlay ]; then
  # keeld's root on an overlay, which cannot host overlay upper dirs.
  mkdir -p /run/keel/ov/l /run/keel/ov/u /run/keel/ov/w
  mount -t overlay keel-e2e -o lowerdir=/run/keel/ov/l,upperdir=/run/keel/ov/u,workdir=/run/keel/ov/w /var/lib/keel
fi
[ ! -e /etc/keel/config.hcl ]
"$BIN/keeld" >"$LOG" 2>&1 &
pid=$!
i=0
until "$BIN/keel" --address /run/keel/keel.sock version >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "keeld exited" >&2; exit 1; fi
  i=$((i+1)); [ "$i" -lt 400 ] || { echo "keeld did not answer" >&2; kill -KILL "$pid"; exit 1; }
  sleep 0.05
done
"$BIN/keel" --address /run/keel/keel.sock plugins ls --format json
# Without --address the CLI finds the same socket.
"$BIN/keel" plugins ls -q >&2
ls /var/lib/keel/plugins >&2
rc=0
kill -TERM "$pid"
wait "$pid" || rc=$?
[ "$rc" = 0 ] || { echo "keeld exited $rc after SIGTERM" >&2; exit 1; }
`

// TestDefaultConfig: with no config file keeld runs the local content
// store and the overlay snapshotter found beside its executable, under the
// default directories; the native snapshotter instead when its root cannot
// host overlay upper dirs (here: the root on an overlay). It runs in a
// private mount namespace with tmpfs over those directories, so the host's
// are neither used nor touched.
func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ rootFS, snapshotter string }{
		{"tmpfs", "overlay"},
		{"overlay", "native"},
	} {
		t.Run("root-on-"+c.rootFS, func(t *testing.T) { testDefaultConfig(t, c.rootFS, c.snapshotter) })
	}
}

func testDefaultConfig(t *testing.T, rootFS, snapshotter string) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testkit.SkipOrFail(t, "unshare(1) not found: %v", err)
	}
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root for a mount namespace")
	}
	for _, d := range defaultDirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		// Only the directory made here goes, and only while empty: the
		// tmpfs over it lived in the namespace alone.
		t.Cleanup(func() {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove %s made by the test: %v", d, err)
			}
		})
	}

	e := newEnv(t)
	log := filepath.Join(e.dir, "keeld-default-"+rootFS+".log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "sh", "-c", defaultScript)
	cmd.Env = append(withoutEnv(os.Environ(), "KEEL_ADDRESS", "KEEL_NAMESPACE"), "BIN="+binDir, "LOG="+log, "ROOT_FS="+rootFS)
	// On timeout the whole group goes: shell, keeld and its plugins.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("script stderr:\n%s\nkeeld log:\n%s", stderr.String(), b)
		}
	}()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Contains(stderr.String(), "unshare failed") {
			testkit.SkipOrFail(t, "no mount namespace here: %s", stderr.String())
		}
		t.Fatalf("script: %v", err)
	}

	var plugins []client.Plugin
	if err := json.Unmarshal(stdout.Bytes(), &plugins); err != nil {
		t.Fatalf("plugins ls --format json: %v\n%s", err, stdout.String())
	}
	want := map[string]string{
		"snapshotter." + snapshotter: filepath.Join(binDir, "keel-snapshotter-"+snapshotter),
		"content.local":              filepath.Join(binDir, "keel-content-local"),
		"runtime.runc":               filepath.Join(binDir, "keel-runtime-runc"),
		"resolver.docker":            filepath.Join(binDir, "keel-resolver-docker"),
	}
	if len(plugins) != len(want) {
		t.Errorf("plugins: %+v, want %v", plugins, want)
	}
	for _, p := range plugins {
		id := p.Kind + "." + p.Name
		if path, ok := want[id]; !ok || p.State != "running" || p.Pid <= 0 || p.Path != path {
			t.Errorf("plugin %+v, want running from %s", p, path)
		}
	}
	for _, d := range []string{"snapshotter." + snapshotter, "content.local"} {
		if !strings.Contains(stderr.String(), d) {
			t.Errorf("no %s under /var/lib/keel/plugins or in plugins ls -q:\n%s", d, stderr.String())
		}
	}
}

func withoutEnv(env []string, keys ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !contains(keys, k) {
			out = append(out, kv)
		}
	}
	return out
}
