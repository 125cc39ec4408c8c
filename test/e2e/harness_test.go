// Package e2e runs keeld with real plugin binaries and drives it with the
// keel CLI and the Go client, as an operator would.
//
// The binaries come from $KEEL_BIN (set by `make test`), else TestMain
// builds them once into a temporary directory.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/fixture/load"
)

// binDir holds keeld, keel and the plugins.
var binDir string

// binaries are what the tests run, by name, with the package that builds each.
var binaries = map[string]string{
	"keeld":                    "./cmd/keeld",
	"keel":                     "./cmd/keel",
	"keel-snapshotter-native":  "./plugins/snapshotter-native",
	"keel-snapshotter-overlay": "./plugins/snapshotter-overlay",
	"keel-snapshotter-btrfs":   "./plugins/snapshotter-btrfs",
	"keel-content-local":       "./plugins/content-local",
	"keel-resolver-docker":     "./plugins/resolver-docker",
	"keel-runtime-runc":        "./plugins/runtime-runc",
	"keel-runtime-runc-shim":   "./cmd/keel-runtime-runc-shim",
	"keel-cri":                 "./cmd/keel-cri",
	"keel-pause":               "./cmd/keel-pause",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binDir = os.Getenv("KEEL_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "keel-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if err := build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
	}
	for name := range binaries {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v (KEEL_BIN=%q)\n", err, os.Getenv("KEEL_BIN"))
			return 1
		}
	}
	sweepStaleBridges()
	return load.Main(m)
}

// build compiles the binaries into dir with one go build.
func build(dir string) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("find the module root: %w", err)
	}
	args := []string{"build", "-o", dir + "/"}
	for _, pkg := range binaries {
		args = append(args, pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = strings.TrimSpace(string(out))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	// go build names each binary after its package directory.
	for name, pkg := range binaries {
		built := filepath.Join(dir, filepath.Base(pkg))
		if built == filepath.Join(dir, name) {
			continue
		}
		if err := os.Rename(built, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// defaultPlugins are the plugin blocks of a normal keeld.
const defaultPlugins = `
plugin "snapshotter" "native" {
  path = "keel-snapshotter-native"
}
plugin "content" "local" {
  path = "keel-content-local"
}
`

// env is the directories of one keeld: config files, logs, root, state and
// socket, all under a short temporary directory so the socket path stays
// well under the 108 bytes a unix socket allows. Several keelds may run in
// turn (or at once, to test that they refuse) on one env.
type env struct {
	dir    string
	root   string
	state  string
	socket string
	n      atomic.Int32 // numbers config and log files
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "ke")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
		removeCgroupParent(filepath.Base(dir))
	})
	return &env{dir: dir, root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		socket: filepath.Join(dir, "k.sock")}
}

// config writes a config file with env's directories, plugin_dir = binDir
// and body (plugin blocks and more) and returns its path.
func (e *env) config(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(e.dir, fmt.Sprintf("keeld-%d.hcl", e.n.Add(1)))
	return writeConfig(t, path, e.root, e.state, e.socket, body)
}

// writeConfig writes a config file with the given directories and socket,
// and a test network block (testNetwork) unless body has its own.
func writeConfig(t testing.TB, path, root, state, socket, body string) string {
	t.Helper()
	if !strings.Contains(body, "\nnetwork {") {
		body += testNetwork(t, root)
	}
	text := fmt.Sprintf("root = %q\nstate = %q\nplugin_dir = %q\ngrpc {\n  address = %q\n}\n%s",
		root, state, binDir, socket, body)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// keeld is a running keeld process, seen from one test.
type keeld struct {
	t   testing.TB
	env *env
	*proc
}

// proc is the keeld process.
type proc struct {
	cmd     *exec.Cmd
	log     string
	done    chan struct{} // closed when the process has been waited for
	waitErr error         // set before done is closed
}

// start runs keeld with the default plugins and waits until it answers.
func (e *env) start(t testing.TB) *keeld {
	t.Helper()
	return e.startWith(t, e.config(t, defaultPlugins))
}

// startWith runs keeld with the config file path and waits until it answers.
func (e *env) startWith(t testing.TB, path string) *keeld {
	t.Helper()
	k := e.spawn(t, path)
	k.waitReady()
	return k
}

// spawn starts keeld --config path without waiting for it. It is stopped
// (SIGTERM, then SIGKILL) at cleanup, and its log dumped if the test failed.
func (e *env) spawn(t testing.TB, path string) *keeld {
	t.Helper()
	return e.spawnEnv(t, path, nil)
}

// spawnEnv is spawn with environ added to keeld's environment.
func (e *env) spawnEnv(t testing.TB, path string, environ []string) *keeld {
	t.Helper()
	log := strings.TrimSuffix(path, ".hcl") + ".log"
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(filepath.Join(binDir, "keeld"), "--config", path)
	cmd.Stdout, cmd.Stderr = f, f
	if environ != nil {
		cmd.Env = append(os.Environ(), environ...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k := &keeld{t: t, env: e, proc: &proc{cmd: cmd, log: log, done: make(chan struct{})}}
	go func() {
		k.waitErr = cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(func() {
		k.stop(10 * time.Second)
		if t.Failed() {
			k.dumpLog()
		}
	})
	return k
}

func (k *keeld) dumpLog() {
	b, err := os.ReadFile(k.log)
	if err != nil {
		k.t.Logf("keeld log: %v", err)
		return
	}
	k.t.Logf("keeld log (pid %d, %s):\n%s", k.cmd.Process.Pid, k.log, b)
}

// waitReady waits until keeld answers Version, failing the test if it
// exits first or takes too long.
func (k *keeld) waitReady() {
	k.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-k.done:
			k.dumpLog()
			k.t.Fatalf("keeld exited before serving: %v", k.waitErr)
		default:
		}
		last = k.ping()
		if last == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	k.dumpLog()
	k.t.Fatalf("keeld did not answer within 20s: %v", last)
}

func (k *keeld) ping() error {
	if _, err := os.Stat(k.env.socket); err != nil {
		return err
	}
	c, err := client.New(k.env.socket, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = c.Version(ctx)
	return err
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. It returns the
// exit error, nil for a clean exit.
func (k *keeld) stop(grace time.Duration) error {
	select {
	case <-k.done:
		return k.waitErr
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
		return k.waitErr
	case <-time.After(grace):
	}
	k.t.Errorf("keeld (pid %d) did not stop within %s of SIGTERM; killing it", k.cmd.Process.Pid, grace)
	_ = k.cmd.Process.Kill()
	<-k.done
	return k.waitErr
}

// with returns k bound to t, for use in a subtest.
func (k *keeld) with(t testing.TB) *keeld {
	c := *k
	c.t = t
	return &c
}

// kill SIGKILLs keeld and waits for it.
func (k *keeld) kill() {
	_ = k.cmd.Process.Kill()
	<-k.done
}

// client connects the Go client in namespace ns.
func (k *keeld) client(t testing.TB, ns string) *client.Client {
	t.Helper()
	c, err := client.New(k.env.socket, client.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// result is what a keel command did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("keel %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// keel runs the CLI against k with args and no stdin.
func (k *keeld) keel(args ...string) result {
	k.t.Helper()
	return k.keelIn(nil, args...)
}

// keelIn runs the CLI against k with stdin.
func (k *keeld) keelIn(stdin io.Reader, args ...string) result {
	k.t.Helper()
	return runKeel(k.t, k.env.socket, stdin, args...)
}

// ok runs the CLI and fails the test unless it exits 0; it returns stdout.
func (k *keeld) ok(args ...string) string {
	k.t.Helper()
	r := k.keel(args...)
	if r.code != 0 {
		k.t.Fatalf("%v", r)
	}
	return r.stdout
}

// okJSON runs the CLI with --format json and decodes stdout into v.
func (k *keeld) okJSON(v any, args ...string) {
	k.t.Helper()
	out := k.ok(append(args, "--format", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		k.t.Fatalf("keel %s --format json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// okWithin is ok for a command that may take longer than a short one's
// 30 s (a pull of a large image on a loaded machine).
func (k *keeld) okWithin(timeout time.Duration, args ...string) string {
	k.t.Helper()
	r := runKeelWithin(k.t, k.env.socket, nil, timeout, args...)
	if r.code != 0 {
		k.t.Fatalf("%v", r)
	}
	return r.stdout
}

func runKeel(t testing.TB, socket string, stdin io.Reader, args ...string) result {
	t.Helper()
	return runKeelWithin(t, socket, stdin, 30*time.Second, args...)
}

func runKeelWithin(t testing.TB, socket string, stdin io.Reader, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--address", socket}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "keel"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		r.code = exit.ExitCode()
	default:
		t.Fatalf("keel %s: %v (stderr: %s)", strings.Join(args, " "), err, stderr.String())
	}
	return r
}

// plugins lists keeld's plugins through the CLI, by "<kind>.<name>".
func (k *keeld) plugins() map[string]client.Plugin {
	k.t.Helper()
	var list []client.Plugin
	k.okJSON(&list, "plugins", "ls")
	out := map[string]client.Plugin{}
	for _, p := range list {
		out[p.Kind+"."+p.Name] = p
	}
	return out
}

// oneLineError checks that a failed command printed exactly one line on
// stderr, prefixed "keel: ", and returns it.
func oneLineError(t testing.TB, r result) string {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("want exit 1; %v", r)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "keel: ") {
		t.Fatalf("want one line \"keel: …\" on stderr; %v", r)
	}
	return lines[0]
}

// settle bounds the wait for what should follow promptly (a plugin
// restarted, a process gone): generous, because on a loaded machine
// promptly can mean many seconds, and a passing test never waits it out.
const settle = 60 * time.Second

// eventually polls cond every 50ms until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive tells whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// leased returns a context whose snapshots and blobs a lease holds until
// release, so that a collection keeld runs meanwhile (after a container or
// image delete) cannot take what the test still uses.
func leased(t *testing.T, c *client.Client) (ctx context.Context, release func()) {
	t.Helper()
	l, err := c.CreateLease(t.Context())
	if err != nil {
		t.Fatalf("create a lease: %v", err)
	}
	return client.WithLease(t.Context(), l.ID), func() {
		if err := c.DeleteLease(context.Background(), l.ID); err != nil {
			t.Errorf("delete lease %s: %v", l.ID, err)
		}
	}
}

// removeCgroupParent removes the (empty) cgroup parent runtimePlugin gave
// the env's tasks in every hierarchy: runc removes a task's own cgroup, not
// its parent, and each env names a parent of its own. A parent a leaked
// task still uses stays (rmdir refuses it).
func removeCgroupParent(base string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/keel-e2e-" + base)
	dirs = append(dirs, "/sys/fs/cgroup/keel-e2e-"+base)
	for _, d := range dirs {
		os.Remove(d)
	}
}
