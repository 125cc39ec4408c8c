package bench

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// settle is how long an idle daemon is left alone before its memory is read.
const settle = 3 * time.Second

// quiet is how long the memory figures leave both daemons without a call
// before they read them: keel's default idle_stop, after which keeld has
// stopped every plugin with nothing to do (the runtime is kept while it
// has tasks). keel's side waits until its plugins say so (waitIdle);
// containerd's is left alone as long.
const quiet = config.DefaultIdleStop

// waitIdle waits until every plugin of d that keep does not name has been
// stopped for idleness; keep names the plugins that have work (a runtime
// with tasks) and stay running.
func waitIdle(ctx context.Context, d *daemon, keep func(client.Plugin) bool) error {
	ctx, cancel := context.WithTimeout(ctx, quiet+time.Minute)
	defer cancel()
	for {
		ps, err := d.client.Plugins(ctx)
		if err != nil {
			return err
		}
		var busy []string
		for _, p := range ps {
			if p.State != pluginhost.StateIdle && (keep == nil || !keep(p)) {
				busy = append(busy, p.Kind+"."+p.Name+" "+p.State)
			}
		}
		if len(busy) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugins not stopped after %s of quiet (idle_stop): %s", quiet, strings.Join(busy, ", "))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// defaultPlugins are the plugin blocks (HCL) that, beside the overlay
// snapshotter startDaemonPlugins is given, make keel's default set: the
// plugins of config.hcl.example a node runs containers with (btrfs aside,
// which needs a btrfs root) — snapshotters overlay and native, content
// local, resolver docker (told regHost is plain HTTP, when set), runtime
// runc.
func defaultPlugins(regHost string) string {
	host := ""
	if regHost != "" {
		host = fmt.Sprintf("host %q { plain_http = true }", regHost)
	}
	return fmt.Sprintf(`plugin "snapshotter" "native" { path = "keel-snapshotter-native" }
plugin "resolver" "docker" {
  path = "keel-resolver-docker"
  config {
    %s
  }
}
plugin "runtime" "runc" {
  path = "keel-runtime-runc"
  config { cgroup_parent = "/keel-bench" }
}
`, host)
}

// startDefaultDaemon starts keeld with the default plugins from private,
// cold copies of the binaries (startDaemon's privateBin): PSS splits an
// executable's pages among every process mapping it, so another keeld on
// the same files would halve the file-backed part.
func startDefaultDaemon(ctx context.Context, regHost string) (*daemon, error) {
	return startDaemonPlugins(ctx, true, benchSnapshotter{name: "overlay"}, defaultPlugins(regHost))
}

// daemonMemory sums the PSS of keeld and its plugins' processes and says
// what each held, and which plugins had no process (stopped for idleness).
func daemonMemory(ctx context.Context, d *daemon) (memory, string, error) {
	ps, err := d.procs(ctx)
	if err != nil {
		return memory{}, "", err
	}
	var total memory
	var parts []string
	for _, p := range ps {
		m, err := readMemory(p.pid)
		if err != nil {
			return memory{}, "", err
		}
		total = total.add(m)
		parts = append(parts, fmt.Sprintf("%s %.1f (anon %.1f)", p.name, mb(m.pss), mb(m.anon)))
	}
	// The plugins with no process count nothing; say which.
	all, err := d.client.Plugins(ctx)
	if err != nil {
		return memory{}, "", err
	}
	for _, p := range all {
		if p.Pid == 0 {
			parts = append(parts, fmt.Sprintf("%s.%s %s (no process)", p.Kind, p.Name, p.State))
		}
	}
	return total, strings.Join(parts, ", "), nil
}

func (m memory) add(o memory) memory {
	return memory{pss: m.pss + o.pss, anon: m.anon + o.anon, file: m.file + o.file}
}

// BenchmarkFigureIdleMemory: idle memory, keeld + default plugins vs
// containerd alone, MB of PSS (proportional set size, from
// /proc/PID/smaps_rollup; MB = MiB here). keel: keeld and the processes
// of its default plugins (defaultPlugins, with their default idle_stop),
// summed, after one call of each kind that has one without a registry or
// a container (version, content Info, snapshot Prepare+Remove), then
// quiet (30 s, keel's default idle_stop): by then keeld has stopped every
// plugin, as none has a task, and only the processes that run count.
// containerd: its one process with its default plugins, CRI included,
// after `ctr version` and `ctr plugins ls`, then as long without a call.
// Both from private copies of their executables, dropped from the page
// cache first, fresh roots each round, read after settle.
func BenchmarkFigureIdleMemory(b *testing.B) {
	ctrBins(b)
	figs := []figure{{order: 30, name: fmt.Sprintf("idle memory: keeld + default plugins vs containerd alone (PSS), after %s without a call (keel's idle_stop)", quiet), unit: "MB"}}
	comparePairs(b, figs, sides{
		keel: func(ctx context.Context, round int) ([]float64, error) {
			d, err := startDefaultDaemon(ctx, "")
			if err != nil {
				return nil, err
			}
			defer d.stop()
			if err := warmUp(ctx, d); err != nil {
				return nil, err
			}
			if err := waitIdle(ctx, d, nil); err != nil {
				return nil, err
			}
			time.Sleep(settle)
			total, parts, err := daemonMemory(ctx, d)
			if err != nil {
				return nil, err
			}
			b.Logf("keel idle PSS, round %d: %s; total %.1f MB (anon %.1f, file %.1f)", round+1, parts, mb(total.pss), mb(total.anon), mb(total.file))
			return []float64{mb(total.pss)}, nil
		},
		containerd: func(ctx context.Context, round int) ([]float64, error) {
			c, err := startContainerd(ctx, ctrdOptions{cri: true, privateBin: true})
			if err != nil {
				return nil, err
			}
			defer c.stop()
			if _, err := c.ctr(ctx, "plugins", "ls"); err != nil {
				return nil, err
			}
			time.Sleep(quiet + settle)
			m, err := readMemory(c.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			b.Logf("containerd idle PSS, round %d: %.1f MB (anon %.1f, file %.1f)", round+1, mb(m.pss), mb(m.anon), mb(m.file))
			return []float64{mb(m.pss)}, nil
		},
	})
}

// liveContainers is how many containers BenchmarkFigureLoadedMemory runs.
const liveContainers = 20

// BenchmarkFigureLoadedMemory: the idle figure's daemons after a pull of
// a busybox image from a loopback registry and with 20 containers
// running `sleep` (busybox, overlay), started with `keel run -d` and
// `ctr run -d`, MB of PSS, read after quiet as the idle figure (keeld has
// then stopped every plugin but the runtime, which has tasks). Figures:
//   - daemons + shims: keel sums keeld, its default plugins' processes
//     and the 20 shims (keel-runtime-runc-shim processes serving one task
//     each); containerd sums containerd and its 20 containerd-shim-runc-v2
//     processes. The containers' own processes (sleep) are not counted on
//     either side;
//   - daemons only: the same without the shims;
//   - PSS per shim: the 20 shims' sum / 20.
func BenchmarkFigureLoadedMemory(b *testing.B) {
	ctrBins(b)
	reg, ref := busyboxRegistry(b)
	figs := []figure{
		{order: 40, name: fmt.Sprintf("the same with %d containers running, after a pull and %s without a call: daemons + %d shims (PSS)", liveContainers, quiet, liveContainers), unit: "MB"},
		{order: 41, name: fmt.Sprintf("the same with %d containers running, after a pull and %s without a call: daemons only, shims not counted (PSS)", liveContainers, quiet), unit: "MB"},
		{order: 70, name: fmt.Sprintf("PSS per shim, %d alive", liveContainers), unit: "MB"},
	}
	ids := make([]string, liveContainers)
	for i := range ids {
		ids[i] = fmt.Sprintf("live-%d", i)
	}
	figures := func(daemons, shims memory) []float64 {
		return []float64{mb(daemons.pss + shims.pss), mb(daemons.pss), mb(shims.pss) / liveContainers}
	}
	comparePairs(b, figs, sides{
		keel: func(ctx context.Context, round int) ([]float64, error) {
			d, err := startDefaultDaemon(ctx, reg.Host)
			if err != nil {
				return nil, err
			}
			defer d.stop()
			if _, err := d.keel(ctx, "image", "pull", "-q", ref); err != nil {
				return nil, err
			}
			for _, id := range ids {
				if _, err := d.keel(ctx, "run", "-d", ref, id, "/bin/busybox", "sleep", "600"); err != nil {
					return nil, err
				}
			}
			if err := waitIdle(ctx, d, func(p client.Plugin) bool { return p.Kind == sdk.KindRuntime }); err != nil {
				return nil, err
			}
			time.Sleep(settle)
			daemons, parts, err := daemonMemory(ctx, d)
			if err != nil {
				return nil, err
			}
			shims, err := keelShims(d)
			if err != nil {
				return nil, err
			}
			if len(shims) != liveContainers {
				return nil, fmt.Errorf("%d keel shims for %d containers", len(shims), liveContainers)
			}
			sum, err := pssOf(shims)
			if err != nil {
				return nil, err
			}
			b.Logf("keel, round %d: %s; %d shims %.1f MB (anon %.1f)", round+1, parts, len(shims), mb(sum.pss), mb(sum.anon))
			return figures(daemons, sum), nil
		},
		containerd: func(ctx context.Context, round int) ([]float64, error) {
			c, err := startContainerd(ctx, ctrdOptions{cri: true, privateBin: true})
			if err != nil {
				return nil, err
			}
			defer c.stop()
			if _, err := c.ctr(ctx, "images", "pull", "--plain-http", "--snapshotter", "overlayfs", ref); err != nil {
				return nil, err
			}
			for _, id := range ids {
				if _, err := c.ctr(ctx, "run", "-d", "--snapshotter", "overlayfs", ref, id, "/bin/busybox", "sleep", "600"); err != nil {
					return nil, err
				}
			}
			time.Sleep(quiet + settle)
			daemon, err := readMemory(c.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			shims, err := c.shims()
			if err != nil {
				return nil, err
			}
			if len(shims) != liveContainers {
				return nil, fmt.Errorf("%d containerd shims for %d containers", len(shims), liveContainers)
			}
			sum, err := pssOf(shims)
			if err != nil {
				return nil, err
			}
			b.Logf("containerd, round %d: containerd %.1f MB (anon %.1f); %d shims %.1f MB (anon %.1f)", round+1, mb(daemon.pss), mb(daemon.anon), len(shims), mb(sum.pss), mb(sum.anon))
			return figures(daemon, sum), nil
		},
	})
}

// keelShims lists the pids of d's task shims, from their shim.pid files
// in the runtime plugin's state.
func keelShims(d *daemon) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(filepath.Join(d.dir, "state"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.Name() != "shim.pid" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		pids = append(pids, pid)
		return nil
	})
	return pids, err
}

// pssOf sums the memory of pids.
func pssOf(pids []int) (memory, error) {
	var sum memory
	for _, pid := range pids {
		m, err := readMemory(pid)
		if err != nil {
			return memory{}, err
		}
		sum = sum.add(m)
	}
	return sum, nil
}

// warmUp makes one call of each kind, so every process has served a request.
func warmUp(ctx context.Context, d *daemon) error {
	if _, err := d.client.Version(ctx); err != nil {
		return err
	}
	if _, err := d.client.ContentStore().Info(ctx, "sha256:0000000000000000000000000000000000000000000000000000000000000000"); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	sn := d.client.SnapshotService("")
	if _, err := sn.Prepare(ctx, "warm-up", ""); err != nil {
		return err
	}
	return sn.Remove(ctx, "warm-up")
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
