package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// logSince is what keeld logged after the first off bytes of its log.
func (k *keeld) logSince(off int) string {
	b, _ := os.ReadFile(k.log)
	if off > len(b) {
		return ""
	}
	return string(b[off:])
}

// logSize is how many bytes keeld has logged.
func (k *keeld) logSize() int {
	b, _ := os.ReadFile(k.log)
	return len(b)
}

// info is keel info --format json.
func (k *keeld) info() client.Info {
	k.t.Helper()
	var info client.Info
	k.okJSON(&info, "info")
	return info
}

// TestReload: a SIGHUP applies a changed resolver block by restarting the
// resolver alone (the next pull reaches the new registry; keeld and a
// running task are untouched), applies a new log level, changes nothing
// for a file that no longer parses (logged with file:line:col), and logs
// every other change as needing a restart. keeld never exits on it.
func TestReload(t *testing.T) {
	t.Parallel()
	needRun(t)
	// Registries A and B hold different images under one name; the
	// resolver's config maps the host reload.test to one of them.
	regs := map[string]*registry.Registry{"A": startRegistry(t), "B": startRegistry(t)}
	imgs := map[string]*registry.Image{}
	for name, reg := range regs {
		img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, Extra: []byte(name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.PushImage(t.Context(), "e2e/busybox", "v1", img); err != nil {
			t.Fatal(err)
		}
		imgs[name] = img
	}
	const ref = "reload.test/e2e/busybox:v1"
	e := newEnv(t)
	// runtimeLine is what the runtime block subtest adds to the runtime's
	// config; the subtests after it keep it.
	runtimeLine := ""
	body := func(to, extra string) string {
		block, err := resolverPlugin(json.RawMessage(fmt.Sprintf(`{"retries": 0, "host": {"reload.test": {"mirrors": ["http://%s"], "fallback": false}}}`, regs[to].Host)))
		if err != nil {
			t.Fatal(err)
		}
		return pullPlugins + block + strings.Replace(runtimePlugin(e), "cgroup_parent =", runtimeLine+"cgroup_parent =", 1) + extra
	}
	path := e.config(t, body("A", ""))
	k := &runKeeld{keeld: e.startWith(t, path), ref: ref}
	t.Cleanup(k.cleanup)
	pid := k.cmd.Process.Pid
	c := k.client(t, "default")

	pulled := func() string {
		t.Helper()
		k.okWithin(settle, "image", "pull", "-q", ref)
		img, err := c.GetImage(t.Context(), ref)
		if err != nil {
			t.Fatal(err)
		}
		return img.Target.Digest.String()
	}
	if got, want := pulled(), imgs["A"].Manifest.Desc.Digest.String(); got != want {
		t.Fatalf("pull through A: %s, want %s", got, want)
	}
	k.ok("run", "-d", ref, "sleeper", "/bin/busybox", "sleep", "100000")
	task := k.tasks()["sleeper"]
	if task.Status != "running" || task.Pid == 0 {
		t.Fatalf("task sleeper: %+v", task)
	}

	// reload writes text as the config file, sends SIGHUP and waits for
	// keeld to have logged every line of want.
	reload := func(t *testing.T, text string, want ...string) string {
		t.Helper()
		off := k.logSize()
		writeConfig(t, path, e.root, e.state, e.socket, text)
		if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var logged string
		eventually(t, settle, "keeld's log of the reload", func() error {
			logged = k.logSince(off)
			for _, w := range want {
				if !strings.Contains(logged, w) {
					return fmt.Errorf("no %q in the log since the SIGHUP:\n%s", w, logged)
				}
			}
			return nil
		})
		return logged
	}

	t.Run("resolver block", func(t *testing.T) {
		logged := reload(t, body("B", ""), "plugin config applied: plugin=resolver.docker")
		if strings.Contains(logged, "needs a restart") {
			t.Errorf("a resolver block change logged as needing a restart:\n%s", logged)
		}
		if got, want := pulled(), imgs["B"].Manifest.Desc.Digest.String(); got != want {
			t.Errorf("pull after the reload: %s, want B's %s", got, want)
		}
	})
	// The runtime restarted with a new config finds its task again.
	t.Run("runtime block", func(t *testing.T) {
		before := k.plugins()["runtime.runc"]
		runtimeLine = "runtime = \"runc\"\n    "
		reload(t, body("B", ""), "plugin config applied: plugin=runtime.runc")
		if now := k.plugins()["runtime.runc"]; now.State != "running" || now.Pid == before.Pid || now.Restarts != before.Restarts {
			t.Errorf("runtime after the reload: %+v, was %+v; want a new process and no restart counted", now, before)
		}
		if now := k.tasks()["sleeper"]; now.Status != "running" || now.Pid != task.Pid {
			t.Errorf("task sleeper after the runtime's restart: %+v, was %+v", now, task)
		}
		if out := k.ok("run", "--rm", "--net", "none", ref, "after", "/bin/busybox", "echo", "ran"); out != "ran\n" {
			t.Errorf("keel run after the runtime's restart: %q", out)
		}
	})
	t.Run("log level", func(t *testing.T) {
		reload(t, body("B", "log_level = \"trace\"\n"), "log level changed: from=info to=trace")
		off := k.logSize()
		if info := k.info(); info.LogLevel != "trace" {
			t.Errorf("keel info: log level %q after the reload, want trace", info.LogLevel)
		}
		// keeld logs each API call at trace level: the call just made.
		eventually(t, settle, "a trace line of the info call", func() error {
			if l := k.logSince(off); !strings.Contains(l, "[TRACE] keeld: call: method=/keel.v1.System/Info") {
				return fmt.Errorf("no trace line of the call in the log since:\n%s", l)
			}
			return nil
		})
	})
	t.Run("broken file", func(t *testing.T) {
		text := body("B", "log_level = \"trace\"\nbroken = = 1\n")
		// The line of the syntax error in the file writeConfig writes.
		lines := strings.Split(header(e)+text, "\n")
		line := slices.Index(lines, "broken = = 1") + 1
		reload(t, text, "config not reloaded, nothing changed", fmt.Sprintf("%s:%d:", path, line))
		if info := k.info(); info.LogLevel != "trace" {
			t.Errorf("keel info: log level %q after a broken config, want trace kept", info.LogLevel)
		}
	})
	t.Run("needs a restart", func(t *testing.T) {
		extra := "log_level = \"trace\"\nlog_format = \"json\"\nmax_concurrent_downloads = 5\n"
		text := strings.Replace(body("B", extra), "plugin \"snapshotter\" \"overlay\"", "plugin \"snapshotter\" \"overlay2\"", 1)
		reload(t, text,
			"not applied, needs a restart: log_format",
			"not applied, needs a restart: max_concurrent_downloads",
			"not applied, needs a restart: plugin snapshotter.overlay removed",
			"not applied, needs a restart: plugin snapshotter.overlay2 added")
		if info := k.info(); info.LogFormat != "text" {
			t.Errorf("keel info: log format %q, want text kept", info.LogFormat)
		}
	})

	select {
	case <-k.done:
		t.Fatalf("keeld exited after SIGHUPs: %v", k.waitErr)
	default:
	}
	if info := k.info(); info.Pid != pid {
		t.Errorf("keeld's pid %d, was %d", info.Pid, pid)
	}
	if now := k.tasks()["sleeper"]; now.Status != "running" || now.Pid != task.Pid || !alive(int(task.Pid)) {
		t.Errorf("task sleeper after the reloads: %+v, was %+v", now, task)
	}
}

// header is what writeConfig writes before a body for e.
func header(e *env) string {
	return fmt.Sprintf("root = %q\nstate = %q\nplugin_dir = %q\ngrpc {\n  address = %q\n}\n", e.root, e.state, binDir, e.socket)
}

// TestNotify: keeld started by systemd (NOTIFY_SOCKET) sends READY=1 once
// its API answers, and STOPPING=1 on SIGTERM; it exits 0 and leaves no
// socket.
func TestNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sockPath := filepath.Join(e.dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	msgs := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed before %s", what)
			}
			return m
		case <-time.After(settle):
			t.Fatalf("no %s on the notify socket within %s", what, settle)
		}
		return ""
	}

	k := e.spawnEnv(t, e.config(t, defaultPlugins), []string{"NOTIFY_SOCKET=" + sockPath})
	if m := next("READY=1"); m != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", m)
	}
	// Ready means the API answers now: one call, no retry.
	c, err := client.New(e.socket, client.WithTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.Version(ctx); err != nil {
		t.Fatalf("READY=1 came but the API does not answer: %v", err)
	}
	c.Close()
	// The notify socket is keeld's alone: its plugins (and the runc a
	// runtime runs, whose start would wait for the container's READY=1)
	// do not inherit it.
	for id, p := range k.plugins() {
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid))
		if err != nil {
			t.Fatalf("plugin %s: %v", id, err)
		}
		if strings.Contains("\x00"+string(environ), "\x00NOTIFY_SOCKET=") {
			t.Errorf("plugin %s (pid %d) has NOTIFY_SOCKET in its environment", id, p.Pid)
		}
	}

	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := next("STOPPING=1"); m != "STOPPING=1" {
		t.Fatalf("notification on SIGTERM %q, want STOPPING=1", m)
	}
	if err := k.stop(settle); err != nil {
		t.Errorf("keeld exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket %s after the stop: %v", e.socket, err)
	}
}

// keeldCmd runs bin/keeld with args, returning stdout, stderr and the exit
// status.
func keeldCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "keeld"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestKeeldConfigCLI: keeld config default, validate and dump, as an
// operator runs them.
func TestKeeldConfigCLI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	def, _, code := keeldCmd(t, "config", "default")
	if code != 0 {
		t.Fatalf("keeld config default: exit %d", code)
	}
	defFile := write("default.hcl", def)
	good := write("good.hcl", "root = \"/var/lib/k2\"\nlog_format = \"json\"\nplugin \"content\" \"local\" {\n  path = \"keel-content-local\"\n  config { a = { b = [1, 2] } }\n}\n")
	noPlugin := write("noplugin.hcl", "plugin \"content\" \"local\" {\n  path = \"/nonexistent/keel-content-local\"\n}\n")
	bad := write("bad.hcl", "root = \"/var/lib/k2\"\n\nlog_level = \"loud\"\nplugin \"content\" \"local\" {\n  path = \"keel-content-local\"\n}\n")

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings
		stderr   []string
		parsesTo string // a file stdout must parse to the same config as
	}{
		{name: "default parses to the embedded default", args: []string{"config", "default"}, stdout: []string{"# log_format = \"text\"", "plugin \"runtime\" \"runc\""}},
		{name: "validate default", args: []string{"config", "validate", defFile}, stdout: []string{defFile + ": valid"}},
		{name: "validate good", args: []string{"config", "validate", good}, stdout: []string{good + ": valid"}},
		{name: "validate bad", args: []string{"config", "validate", bad}, code: 1, stderr: []string{bad + ":3:13: Invalid log_level"}},
		{name: "validate missing plugin", args: []string{"config", "validate", noPlugin}, code: 1,
			stderr: []string{noPlugin + ":2:10: content.local: stat /nonexistent/keel-content-local: no such file"}},
		{name: "validate missing", args: []string{"config", "validate", filepath.Join(dir, "none.hcl")}, code: 1, stderr: []string{"none.hcl: no such file"}},
		{name: "unknown command", args: []string{"config", "bogus"}, code: 1, stderr: []string{`unknown command "bogus" for "keeld config"`}},
		{name: "validate no file", args: []string{"config", "validate"}, code: 1, stderr: []string{"accepts 1 arg"}},
		{name: "dump good", args: []string{"config", "dump", "--config", good}, stdout: []string{"log_format", "max_layers", "ingest_max_age", "cni_bin_dirs"}, parsesTo: good},
		{name: "dump default file", args: []string{"config", "dump", "--config", defFile}, parsesTo: defFile},
		{name: "dump bad", args: []string{"config", "dump", "--config", bad}, code: 1, stderr: []string{bad + ":3:13"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := keeldCmd(t, tc.args...)
			if code != tc.code {
				t.Fatalf("keeld %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.code, stdout, stderr)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout has no %q:\n%s", w, stdout)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr has no %q:\n%s", w, stderr)
				}
			}
			if tc.parsesTo != "" {
				want, err := config.Load(tc.parsesTo)
				if err != nil {
					t.Fatal(err)
				}
				got, err := config.Parse([]byte(stdout), "dump")
				if err != nil {
					t.Fatalf("dump does not parse: %v\n%s", err, stdout)
				}
				if g, w := effective(t, got), effective(t, want); g != w {
					t.Errorf("dump parses to\n%s\nwant\n%s", g, w)
				}
			}
		})
	}
	// The printed default is the config keeld runs with no file, before it
	// picks one of its two snapshotters.
	got, err := config.Parse([]byte(def), "default")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := effective(t, got), effective(t, config.Default()); g != w {
		t.Errorf("keeld config default parses to\n%s\nwant\n%s", g, w)
	}
}

// effective is c as JSON with its blocks' defaults filled in, so a file
// that leaves a block out and its dump, which writes it, compare equal;
// plugin paths are relative to plugin_dir, which is the executable's
// directory (keeld's, or this test's) when unset.
func effective(t *testing.T, c *config.Config) string {
	t.Helper()
	n := c.NetworkConfig()
	cp := *c
	cp.Plugins = slices.Clone(c.Plugins)
	for i := range cp.Plugins {
		cp.Plugins[i].Path = strings.TrimPrefix(cp.Plugins[i].Path, c.PluginDir)
	}
	cr := c.CRIConfig()
	cr.Path = strings.TrimPrefix(cr.Path, c.PluginDir)
	// keel's own pause image is tagged with the version of the keeld that
	// runs (or dumps), not this test's.
	if strings.HasPrefix(cr.SandboxImage, "localhost/keel/pause:") {
		cr.SandboxImage = "localhost/keel/pause:VERSION"
	}
	cp.PluginDir, cp.CRI = "", &cr
	cp.Network, cp.GC, cp.Limits = &n, &config.GC{Interval: config.Duration(c.GCInterval()), IngestMaxAge: config.Duration(c.GCIngestMaxAge())}, nil
	cp.Events = &config.Events{Window: c.EventsWindow()}
	b, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInfo: keel info tells the version, directories, socket, config file,
// the host's cgroup version and the plugins, as a table and as JSON.
func TestInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	path := e.config(t, defaultPlugins)
	k := e.startWith(t, path)
	info := k.info()
	if info.Root != e.root || info.State != e.state || info.Address != e.socket || info.ConfigFile != path ||
		info.Pid != k.cmd.Process.Pid || info.LogLevel != "info" || info.LogFormat != "text" || info.Version == "" {
		t.Errorf("keel info: %+v", info)
	}
	if want := hostCgroupVersion(t); info.CgroupVersion != want {
		t.Errorf("keel info: cgroup version %q, want %q", info.CgroupVersion, want)
	}
	var plugins []string
	for _, p := range info.Plugins {
		plugins = append(plugins, p.Kind+"."+p.Name)
		if p.State != "running" && p.State != "idle" {
			t.Errorf("plugin %s.%s: state %q", p.Kind, p.Name, p.State)
		}
	}
	if want := []string{"content.local", "snapshotter.native"}; !slices.Equal(plugins, want) {
		t.Errorf("keel info: plugins %v, want %v", plugins, want)
	}
	out := k.ok("info")
	for _, w := range []string{"Root: " + e.root, "Socket: " + e.socket, "Config file: " + path, "Cgroup version: " + info.CgroupVersion, "content local"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), w) {
			t.Errorf("keel info has no %q:\n%s", w, out)
		}
	}
}

// hostCgroupVersion reads the host's cgroup mode from its mounts, apart
// from the library keeld uses: cgroup2 at /sys/fs/cgroup is v2; cgroup v1
// there with a cgroup2 mount beside it (/sys/fs/cgroup/unified) is
// hybrid; else v1.
func hostCgroupVersion(t *testing.T) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	const cgroup2Magic = 0x63677270
	if st.Type == cgroup2Magic {
		return "v2"
	}
	if err := syscall.Statfs("/sys/fs/cgroup/unified", &st); err == nil && st.Type == cgroup2Magic {
		return "hybrid"
	}
	return "v1"
}

// TestLogFormatJSON: with log_format = "json" every line of keeld's log,
// its plugins' lines included, is a JSON object.
func TestLogFormatJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.startWith(t, e.config(t, "log_format = \"json\"\n"+defaultPlugins))
	if info := k.info(); info.LogFormat != "json" {
		t.Errorf("keel info: log format %q, want json", info.LogFormat)
	}
	if err := k.stop(settle); err != nil {
		t.Fatalf("keeld exit: %v", err)
	}
	b, err := os.ReadFile(k.log)
	if err != nil {
		t.Fatal(err)
	}
	modules := map[string]bool{}
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		var entry struct {
			Message string `json:"@message"`
			Module  string `json:"@module"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.Message == "" {
			t.Errorf("log line is no JSON object with a @message: %q (%v)", line, err)
		}
		modules[entry.Module] = true
	}
	for _, m := range []string{"keeld", "keeld.content.local"} {
		if !modules[m] {
			t.Errorf("no JSON line from %s; modules %v", m, modules)
		}
	}
}
