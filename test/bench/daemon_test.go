package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// namespace is where the benchmarks work.
const namespace = "bench"

// daemon is a keeld started for a benchmark, with its plugins.
type daemon struct {
	dir    string // holds root/, state/, the config, the socket and keeld.log
	cmd    *exec.Cmd
	done   chan struct{}
	client *client.Client
	undo   func() // undoes the snapshotter's prepare, after keeld stops
}

// binDir is where keeld and the plugins are: $KEEL_BIN, else ../../bin.
func binDir() (string, error) {
	dir := os.Getenv("KEEL_BIN")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "keeld")); err != nil {
		return "", fmt.Errorf("keeld not built (run make build, or set KEEL_BIN): %w", err)
	}
	return dir, nil
}

// benchDir makes a directory for one daemon's data on a real disk:
// $KEEL_BENCH_DIR or the system temp directory.
func benchDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp(os.Getenv("KEEL_BENCH_DIR"), prefix)
	if err != nil {
		return "", err
	}
	return dir, nil
}

// fsType names the filesystem dir is on, for the report.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// startDaemon starts keeld in a fresh directory with the native
// snapshotter and the local content store, and connects a client in the
// bench namespace. The caller stops it.
//
// With privateBin, keeld and the plugins run from copies of the binaries
// that no other process maps, with their page cache dropped: a process's
// PSS splits the pages of an executable among every process mapping it, so
// another keeld running the same files would halve the figures.
func startDaemon(ctx context.Context, privateBin bool) (*daemon, error) {
	return startDaemonWith(ctx, privateBin, benchSnapshotter{name: "native"})
}

// startDaemonWith is startDaemon with sn as keeld's only snapshotter.
func startDaemonWith(ctx context.Context, privateBin bool, sn benchSnapshotter) (*daemon, error) {
	return startDaemonPlugins(ctx, privateBin, sn, "")
}

// startDaemonPlugins is startDaemonWith with more plugin blocks (HCL).
func startDaemonPlugins(ctx context.Context, privateBin bool, sn benchSnapshotter, extra string) (_ *daemon, err error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := benchDir("keel-bench-")
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, done: make(chan struct{})}
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	if privateBin {
		if bin, err = copyBinaries(bin, filepath.Join(dir, "bin")); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`root = %q
state = %q
log_level = "warn"
plugin_dir = %q
default_snapshotter = %q
grpc { address = %q }
plugin "snapshotter" %q {
  path = "keel-snapshotter-%s"
  config {
%s
  }
}
plugin "content" "local" { path = "keel-content-local" }
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), bin, sn.name, d.socket(), sn.name, sn.name, sn.config, extra)
	if sn.prepare != nil {
		pluginRoot := filepath.Join(dir, "root", "plugins", "snapshotter."+sn.name)
		if err := os.MkdirAll(pluginRoot, 0o700); err != nil {
			return nil, err
		}
		undo, err := sn.prepare(pluginRoot)
		if err != nil {
			return nil, fmt.Errorf("prepare the %s root: %w", sn.name, err)
		}
		d.undo = undo
	}
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "keeld.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(bin, "keeld"), "--config", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.cmd.Wait(); close(d.done) }()

	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("keeld: %w\n%s", err, d.logTail())
	}
	if _, err := d.client.Namespaces().Create(ctx, namespace, nil); err != nil {
		return nil, err
	}
	return d, nil
}

// copyBinaries copies keeld, keel and the plugins from src into dst and drops
// the copies' page cache, so they are read from disk as after a reboot.
func copyBinaries(src, dst string) (string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	names, err := filepath.Glob(filepath.Join(src, "keel*"))
	if err != nil {
		return "", err
	}
	// Hard links stay links (keel-plugins under each plugin's name): one
	// copy, its pages shared, as installed.
	copied := map[string]os.FileInfo{}
	for _, path := range names {
		name := filepath.Base(path)
		st, err := os.Stat(path)
		if err != nil {
			return "", err
		}
		linked := false
		for first, fi := range copied {
			if os.SameFile(fi, st) {
				if err := os.Link(filepath.Join(dst, first), filepath.Join(dst, name)); err != nil {
					return "", err
				}
				linked = true
				break
			}
		}
		if linked {
			continue
		}
		copied[name] = st
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o755); err != nil {
			return "", err
		}
	}
	return dst, dropCache(dst)
}

func (d *daemon) socket() string { return filepath.Join(d.dir, "keel.sock") }

// keel runs the keel CLI against this keeld in the bench namespace.
func (d *daemon) keel(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "keel"), append([]string{"--address", d.socket(), "-n", namespace}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("keel %s: %v: %s\nkeeld.log:\n%s", strings.Join(args, " "), err, out, d.logTail())
	}
	return out, nil
}

// connect waits for the socket, connects, and waits for every plugin to run.
func (d *daemon) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(d.socket()); err == nil {
			break
		}
		select {
		case <-d.done:
			return fmt.Errorf("exited: %v", d.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("no socket at %s: %w", d.socket(), ctx.Err())
		case <-tick.C:
		}
	}
	c, err := client.New(d.socket(), client.WithNamespace(namespace))
	if err != nil {
		return err
	}
	d.client = c
	for {
		// The socket's file appears at bind, a moment before keeld
		// listens on it: a refused connection is retried until the
		// deadline.
		ps, err := c.Plugins(ctx)
		if errdefs.IsUnavailable(err) && ctx.Err() == nil {
			<-tick.C
			continue
		}
		if err != nil {
			return err
		}
		running := 0
		for _, p := range ps {
			if p.State == "running" {
				running++
			}
		}
		if len(ps) > 0 && running == len(ps) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugins not running: %+v: %w", ps, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop removes the containers left, ends keeld (its plugins end with it)
// and removes its directory.
func (d *daemon) stop() {
	if d.client != nil {
		// Tasks outlive keeld: remove every container a benchmark left,
		// its task killed first.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if cs, err := d.client.Containers(ctx); err == nil {
			for _, c := range cs {
				c.Delete(ctx, client.WithForce)
			}
		}
		cancel()
		d.client.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	// Shims outlive keeld: kill any a benchmark left (their argument is
	// their task's directory, under d.dir), and unmount what is left.
	if pids, err := pidsWithArg(func(arg string) bool { return strings.HasPrefix(arg, d.dir+"/") }); err == nil {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if d.undo != nil {
		d.undo()
	}
	unmountUnder(d.dir)
	os.RemoveAll(d.dir)
}

// logTail is the end of keeld's log, for errors.
func (d *daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "keeld.log"))
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// proc is one process of the daemon: keeld or a plugin.
type proc struct {
	name string // "keeld" or "<kind>.<name>"
	pid  int
}

// procs lists keeld and its plugins' processes.
func (d *daemon) procs(ctx context.Context) ([]proc, error) {
	out := []proc{{"keeld", d.cmd.Process.Pid}}
	ps, err := d.client.Plugins(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Pid == 0 {
			continue // no process: stopped (idle_stop) or not started yet
		}
		out = append(out, proc{p.Kind + "." + p.Name, p.Pid})
	}
	return out, nil
}

// clockTick is the kernel's USER_HZ, which /proc/PID/stat counts in; it is
// 100 on every Linux architecture Go supports.
const clockTick = 100

// cpuTime is the user+system CPU time pid has used ("self" for this
// process).
func cpuTime(pid string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: short", pid)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime (fields 14 and 15)
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%s/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// cpuSample is the CPU time of this process and each daemon process.
type cpuSample map[string]time.Duration

func (d *daemon) cpu(ctx context.Context) (cpuSample, error) {
	ps, err := d.procs(ctx)
	if err != nil {
		return nil, err
	}
	s := cpuSample{}
	t, err := cpuTime("self")
	if err != nil {
		return nil, err
	}
	s["client"] = t
	for _, p := range ps {
		t, err := cpuTime(strconv.Itoa(p.pid))
		if err != nil {
			return nil, err
		}
		s[p.name] = t
	}
	return s, nil
}

// reportCPU reports the CPU seconds each process spent between two samples.
func reportCPU(b *testing.B, before, after cpuSample, prefix string) {
	for name, t := range after {
		b.ReportMetric((t - before[name]).Seconds(), prefix+name+"-cpu-s")
	}
}

// memory is a process's proportional set size, split into anonymous
// memory (heap, stacks) and file-backed pages (mostly the executable's code
// and read-only data).
type memory struct{ pss, anon, file int64 }

// readMemory reads pid's smaps_rollup.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	fields := map[string]*int64{"Pss:": &m.pss, "Pss_Anon:": &m.anon, "Pss_File:": &m.file}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || fields[f[0]] == nil {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("/proc/%d/smaps_rollup: %w", pid, err)
		}
		*fields[f[0]] = kb << 10
	}
	if m.pss == 0 {
		return memory{}, fmt.Errorf("/proc/%d/smaps_rollup: no Pss line", pid)
	}
	return m, nil
}
