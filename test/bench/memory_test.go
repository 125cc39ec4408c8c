package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// settle is how long an idle daemon is left alone before its memory is read.
const settle = 3 * time.Second

// BenchmarkIdleMemory reports the proportional set size (PSS) of a fresh,
// idle keeld and of each of its plugin processes, after one call of each
// kind has warmed them up, in total and split into anonymous memory and
// file-backed pages (the executables' code, which recent kernels map whole
// once it is in the page cache). containerd 1.6's daemon alone is about
// 37 MB: BenchmarkIdleMemoryContainerd measures it on this machine when it
// is installed.
//
// keeld and the plugins run from private copies of the binaries, read from
// disk as after a reboot (startDaemon's privateBin): PSS shares an
// executable's pages among all processes mapping it, so another keeld on
// the same files would halve the file-backed part.
func BenchmarkIdleMemory(b *testing.B) {
	ctx := context.Background()
	d, err := startDaemon(ctx, true)
	if err != nil {
		b.Fatal(err)
	}
	defer d.stop()
	if err := warmUp(ctx, d); err != nil {
		b.Fatal(err)
	}
	time.Sleep(settle)
	ps, err := d.procs(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var total memory
	var parts []string
	for _, p := range ps {
		m, err := readMemory(p.pid)
		if err != nil {
			b.Fatal(err)
		}
		total.pss += m.pss
		total.anon += m.anon
		total.file += m.file
		b.ReportMetric(mb(m.pss), "pss-"+p.name+"-MB")
		parts = append(parts, fmt.Sprintf("%s %.1f MB (anon %.1f, file %.1f)", p.name, mb(m.pss), mb(m.anon), mb(m.file)))
	}
	reportMemory(b, total)
	b.Logf("idle PSS: %s; total %.1f MB", strings.Join(parts, ", "), mb(total.pss))
}

// BenchmarkIdleMemoryContainerd is the same measure of containerd's daemon,
// when containerd is installed (Debian's package is 1.6): its default
// plugins, CRI included, on a scratch root, its executable read from disk.
func BenchmarkIdleMemoryContainerd(b *testing.B) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		b.Skip("containerd not installed: nothing to compare with")
	}
	if err := dropFileCache(bin); err != nil {
		b.Fatal(err)
	}
	dir, err := benchDir("keel-bench-containerd-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfg, "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", sock, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	// Wait for the socket, then let it settle as keeld does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("containerd: no socket at %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ctr, err := exec.LookPath("ctr"); err == nil {
		exec.Command(ctr, "--address", sock, "version").Run()
		exec.Command(ctr, "--address", sock, "plugins", "ls").Run()
	}
	time.Sleep(settle)
	m, err := readMemory(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	reportMemory(b, m)
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		b.Logf("%s: idle PSS %.1f MB (anon %.1f, file %.1f)", strings.TrimSpace(string(out)), mb(m.pss), mb(m.anon), mb(m.file))
	}
}

func reportMemory(b *testing.B, total memory) {
	b.ReportMetric(mb(total.pss), "pss-total-MB")
	b.ReportMetric(mb(total.anon), "pss-anon-total-MB")
	b.ReportMetric(mb(total.file), "pss-file-total-MB")
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
