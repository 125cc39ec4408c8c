package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	ccontent "github.com/containerd/containerd/v2/core/content"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/leases"
	leasesproxy "github.com/containerd/containerd/v2/core/leases/proxy"
	"github.com/containerd/containerd/v2/core/snapshots"
	snapshotsproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ctrd is a containerd daemon started for a benchmark: Debian's
// containerd (1.6) on a scratch root, state and socket, driven with ctr
// and, for the API figures, through its gRPC API with containerd's own Go
// client packages (content and snapshot proxies).
type ctrd struct {
	dir  string // holds root/, state/, config.toml, the socket, containerd.log
	cmd  *exec.Cmd
	done chan struct{}
	conn *grpc.ClientConn
	// ctx carries the bench namespace and a lease, so containerd's garbage
	// collector leaves what a benchmark makes alone until it removes it.
	ctx context.Context
}

// ctrdOptions say how to start containerd.
type ctrdOptions struct {
	// cri keeps the CRI plugin on (disabled otherwise: no figure but the
	// idle memory of containerd's default plugins needs it).
	cri bool
	// privateBin runs containerd from a copy of its executable that no
	// other process maps, dropped from the page cache, as startDaemon's
	// privateBin does for keel's (memory figures): a system containerd
	// running the same file would halve its file-backed PSS.
	privateBin bool
	// metrics is the metrics address (host:port), "" for none.
	metrics string
	// criConfig, when set, turns the CRI plugin on with these TOML
	// tables (its [plugins."io.containerd.grpc.v1.cri"] settings).
	criConfig string
}

// ctrBins finds containerd and ctr, or skips b: `make bench` installs
// Debian's containerd package when they are missing.
func ctrBins(b *testing.B) {
	for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(name); err != nil {
			b.Skipf("%s not installed (apt-get install containerd; make bench does): nothing to compare with", name)
		}
	}
}

// startContainerd starts containerd in a fresh directory and waits until
// it answers. The caller stops it.
func startContainerd(ctx context.Context, opts ctrdOptions) (_ *ctrd, err error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, err
	}
	dir, err := benchDir("ctrd-bench-")
	if err != nil {
		return nil, err
	}
	c := &ctrd{dir: dir, done: make(chan struct{})}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if opts.privateBin {
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		bin = filepath.Join(dir, "containerd")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			return nil, err
		}
		if err := dropFileCache(bin); err != nil {
			return nil, err
		}
	}
	disabled := `["io.containerd.grpc.v1.cri"]`
	if opts.cri || opts.criConfig != "" {
		disabled = "[]"
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = %s
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "warn"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, c.socket(), c.socket()+".ttrpc")
	if opts.metrics != "" {
		cfg += fmt.Sprintf("[metrics]\n  address = %q\n", opts.metrics)
	}
	cfg += opts.criConfig
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { c.cmd.Wait(); close(c.done) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.ctr(ctx, "version"); err == nil {
			break
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("containerd exited: %v\n%s", c.cmd.ProcessState, c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd did not answer on %s\n%s", c.socket(), c.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.conn, err = grpc.NewClient("unix://"+c.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	c.ctx = namespaces.WithNamespace(ctx, namespace)
	l, err := leasesproxy.NewLeaseManager(leasesapi.NewLeasesClient(c.conn)).Create(c.ctx, leases.WithRandomID())
	if err != nil {
		return nil, fmt.Errorf("containerd lease: %w", err)
	}
	c.ctx = leases.WithLease(c.ctx, l.ID)
	return c, nil
}

func (c *ctrd) socket() string { return filepath.Join(c.dir, "containerd.sock") }

// ctr runs ctr against this containerd in the bench namespace.
func (c *ctrd) ctr(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.socket(), "--namespace", namespace}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// contentStore is containerd's content store through its API.
func (c *ctrd) contentStore() ccontent.Store { return contentproxy.NewContentStore(c.conn) }

// snapshotter is one of containerd's snapshotters through its API.
func (c *ctrd) snapshotter(name string) snapshots.Snapshotter {
	return snapshotsproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(c.conn), name)
}

// shims lists the pids of this containerd's shims (containerd-shim-runc-v2
// processes started with its socket as -address); they outlive it.
func (c *ctrd) shims() ([]int, error) {
	return pidsWithArg(func(arg string) bool { return arg == c.socket() })
}

// stop removes every task and container left in the bench namespace,
// stops containerd, kills shims that survived it, unmounts whatever is
// still mounted under its directory and removes it. It is safe to call
// on a half-started daemon and after a failed benchmark.
func (c *ctrd) stop() {
	if c.cmd != nil && c.cmd.Process != nil && c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := c.ctr(ctx, "containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				c.ctr(ctx, "tasks", "rm", "-f", id)
				c.ctr(ctx, "containers", "rm", id)
			}
		}
		cancel()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
	if pids, err := c.shims(); err == nil {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	unmountUnder(c.dir)
	os.RemoveAll(c.dir)
}

// logTail is the end of containerd's log, for errors.
func (c *ctrd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// pidsWithArg lists the processes one of whose arguments matches.
func pidsWithArg(match func(arg string) bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(strings.Split(string(b), "\x00"), match) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return
	}
	slices.SortFunc(ms, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	for _, m := range ms {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			fmt.Fprintf(os.Stderr, "bench: unmount %s: %v\n", m.Mountpoint, err)
		}
	}
}
