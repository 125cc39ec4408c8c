package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// refuseWithin is how fast keeld must give up on a bad setup.
const refuseWithin = 5 * time.Second

// TestRefusesBadSetup: keeld exits 1 at once on a bad config or plugin,
// with one error line that says why.
func TestRefusesBadSetup(t *testing.T) {
	t.Parallel()
	native := filepath.Join(binDir, "keel-snapshotter-native")
	sum := fileSHA256(t, native)
	zeros := strings.Repeat("0", 64)
	content := `
plugin "content" "local" {
  path = "keel-content-local"
}
`
	for _, tc := range []struct {
		name string
		// body is the config after the directories; {dir} is the test's
		// own directory (for scripts).
		body string
		// want are regexps the error line must match.
		want []string
	}{
		{
			name: "sha256 mismatch",
			body: `
plugin "snapshotter" "native" {
  path   = "keel-snapshotter-native"
  sha256 = "` + zeros + `"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:10:12: snapshotter\.native: `, regexp.QuoteMeta(native), zeros, sum, "sha256"},
		},
		{
			name: "bin true",
			body: `
plugin "snapshotter" "native" {
  path = "/bin/true"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:9:10: snapshotter\.native: `, "/bin/true", "not a keel plugin"},
		},
		{
			name: "script printing junk",
			body: `
plugin "snapshotter" "native" {
  path = "{dir}/junk.sh"
}` + content,
			want: []string{"snapshotter.native", "junk.sh", "not a keel plugin", "junk output"},
		},
		{
			name: "wrong kind",
			body: `
plugin "snapshotter" "native" {
  path = "keel-content-local"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:8:8: snapshotter\.native: `, "keel-content-local", `"content" plugin`, "snapshotter"},
		},
		{
			name: "hcl syntax error",
			body: `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
` + content,
			want: []string{`keeld-\d+\.hcl:\d+:\d+: `},
		},
		{
			name: "missing plugin file",
			body: `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-nosuch"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:9:10: snapshotter\.native: `, regexp.QuoteMeta(filepath.Join(binDir, "keel-snapshotter-nosuch")), "no such file"},
		},
		{
			name: "protocol mismatch",
			body: `
plugin "snapshotter" "native" {
  path = "{dir}/v2only"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:9:10: snapshotter\.native: `, "another plugin protocol"},
		},
		{
			name: "unknown config key",
			body: `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
  config {
    bogus = 1
  }
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:11:5: snapshotter\.native: `, `config key "bogus": unknown key`},
		},
		{
			name: "config value of the wrong type",
			body: `
plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
    timeout = "30s"
    host "127.0.0.1:5000" {
      plain_http = "yes"
    }
  }
}
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:13:7: resolver\.docker: `, `plain_http`, "bool"},
		},
		{
			name: "config value refused by the plugin",
			body: `
plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
    timeout = "soon"
  }
}
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}` + content,
			want: []string{`^keeld: /\S+/keeld-\d+\.hcl:11:5: resolver\.docker: `, `config key "timeout": "soon" is not a positive duration`},
		},
		{
			name: "missing content plugin",
			body: `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}
`,
			want: []string{`keeld-\d+\.hcl:\d+:\d+: `, "content"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			// The child shell holds stdout and names the script in its
			// command line, so a leftover is found below.
			script := "#!/bin/sh\necho junk output\necho more junk\nsh -c 'sleep 30; :' \"$0\"\n"
			if err := os.WriteFile(filepath.Join(e.dir, "junk.sh"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tc.body, "{dir}/v2only") {
				buildV2Only(t, e.dir)
			}
			path := e.config(t, strings.ReplaceAll(tc.body, "{dir}", e.dir))
			line, stderr := refuse(t, path)
			for _, w := range tc.want {
				if !regexp.MustCompile(w).MatchString(line) {
					t.Errorf("error %q does not match %q", line, w)
				}
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", stderr)
			}
			if _, err := os.Stat(e.socket); err == nil {
				t.Errorf("keeld left its socket %s behind", e.socket)
			}
			// Nothing keeld started outlives it.
			eventually(t, settle, "no process left from "+e.dir, func() error {
				if pids := processesMentioning(e.dir); len(pids) > 0 {
					return fmt.Errorf("pids %v", pids)
				}
				return nil
			})
		})
	}
}

// buildV2Only builds into dir a plugin that speaks only protocol 2.
func buildV2Only(t *testing.T, dir string) {
	t.Helper()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find the module root: %v", err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "v2only"), "./core/pluginhost/testdata/v2only")
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build v2only: %v\n%s", err, out)
	}
}

// refuse runs keeld --config path, expects it to exit 1 within
// refuseWithin, and returns its error line (the only line that starts
// "keeld: ") and all of stderr. Log lines may come before the error line.
func refuse(t *testing.T, path string, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*refuseWithin)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "keeld"), append([]string{"--config", path}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("keeld: %v, want exit 1\nstderr:\n%s", err, stderr.String())
	}
	if took > refuseWithin {
		t.Errorf("keeld took %s to refuse, want < %s", took.Round(time.Millisecond), refuseWithin)
	}
	if stdout.Len() > 0 {
		t.Errorf("keeld printed on stdout: %q", stdout.String())
	}
	var errLines []string
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "keeld: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || lines[len(lines)-1] != errLines[0] {
		t.Fatalf("want one error line \"keeld: …\", last on stderr; got:\n%s", stderr.String())
	}
	return errLines[0], stderr.String()
}

// TestKeeldKilled: a keeld killed with SIGKILL takes its plugins with it,
// and the next keeld on the same root and socket finds everything. A
// second keeld on a root in use is refused.
func TestKeeldKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := e.config(t, defaultPlugins)
	k := e.startWith(t, path)

	k.ok("snapshot", "prepare", "s-active")
	k.ok("snapshot", "commit", "s", "s-active")
	k.ok("snapshot", "prepare", "s-child", "s")
	blob := []byte("kept across keelds")
	dgst := digest.FromBytes(blob)
	if r := k.keelIn(bytes.NewReader(blob), "-n", "ns1", "content", "ingest", "r"); r.code != 0 {
		t.Fatal(r)
	}

	// A second keeld on the same root, with its own socket, is refused.
	other := filepath.Join(e.dir, "other.sock")
	line, _ := refuse(t, writeConfig(t, filepath.Join(e.dir, "second.hcl"), e.root, e.state, other, defaultPlugins))
	if !strings.Contains(line, "another keeld") || !strings.Contains(line, e.root) {
		t.Errorf("second keeld on the root: %q, want it to name the root and another keeld", line)
	}
	// And so is one on another root serving the same socket.
	line, _ = refuse(t, writeConfig(t, filepath.Join(e.dir, "third.hcl"), filepath.Join(e.dir, "root3"), filepath.Join(e.dir, "state3"), e.socket, defaultPlugins))
	if !strings.Contains(line, "another keeld") || !strings.Contains(line, e.socket) {
		t.Errorf("second keeld on the socket: %q, want it to name the socket and another keeld", line)
	}
	// The first keeld did not notice.
	if got := k.ok("snapshot", "ls", "-q"); got != "s\ns-child\n" {
		t.Errorf("snapshot ls after the refused keelds: %q", got)
	}

	var pids []int
	for id, p := range k.plugins() {
		if p.Pid <= 0 || !alive(p.Pid) {
			t.Fatalf("%s: pid %d not running", id, p.Pid)
		}
		pids = append(pids, p.Pid)
	}
	k.kill()
	eventually(t, settle, "plugins gone with keeld", func() error {
		for _, pid := range pids {
			if alive(pid) {
				return fmt.Errorf("plugin pid %d still runs", pid)
			}
		}
		return nil
	})

	// The socket file is left behind; the next keeld replaces it.
	k2 := e.startWith(t, path)
	if got := k2.ok("snapshot", "ls", "-q"); got != "s\ns-child\n" {
		t.Errorf("snapshot ls in the new keeld: %q", got)
	}
	if got := k2.ok("-n", "ns1", "content", "get", dgst.String()); got != string(blob) {
		t.Errorf("content get in the new keeld: %q", got)
	}
	for id, p := range k2.plugins() {
		if p.State != "running" || p.Restarts != 0 {
			t.Errorf("%s in the new keeld: %+v", id, p)
		}
	}
	if err := k2.stop(10 * time.Second); err != nil {
		t.Errorf("keeld after SIGTERM: %v, want a clean exit", err)
	}
	if _, err := os.Stat(e.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after a clean stop: %v, want it removed", err)
	}
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// processesMentioning lists the live processes whose command line contains s.
func processesMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
