package critest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// Debian's busybox-static is built with a standalone shell: its sh runs
// applets without exec'ing /bin/<applet>, so a container whose /bin/ls is
// masked still lists with `sh -c ls`, and critest's MaskedPaths spec,
// which expects "/bin/sh: ls: Permission denied", fails whatever the
// runtime. The busybox image critest uses has no standalone shell, and
// neither has Debian's dynamically linked busybox: the busybox stand-in's
// /bin/sh is that one (apt-get download busybox, never installed: it
// conflicts with busybox-static), with the libraries it loads, from this
// machine.

// shellBusybox is where the dynamic busybox is kept once downloaded.
func shellBusybox() string { return filepath.Join(cacheDir(), "busybox-dynamic") }

// nonStandaloneShell returns the layer entries that make /bin/sh a
// shell that execs its commands: Debian's dynamic busybox and its
// libraries at their paths on this machine.
func nonStandaloneShell(t testing.TB) ([]tarEntry, error) {
	t.Helper()
	bin := shellBusybox()
	if _, err := os.Stat(bin); err != nil {
		if err := downloadShellBusybox(t, bin); err != nil {
			return nil, err
		}
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	entries := []tarEntry{{name: "bin/sh", data: data, mode: 0o755}}
	// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and the
	// loader's "/lib64/ld-linux-x86-64.so.2 (0x…)".
	for _, m := range regexp.MustCompile(`(?m)^\s*(?:\S+ => )?(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		lib, err := os.ReadFile(m[1]) // the file a link leads to
		if err != nil {
			return nil, err
		}
		entries = append(entries, tarEntry{name: m[1][1:], data: lib, mode: 0o755})
	}
	return entries, nil
}

// downloadShellBusybox fetches Debian's busybox package with apt-get
// download and extracts its executable to bin.
func downloadShellBusybox(t testing.TB, bin string) error {
	dir := t.TempDir()
	dl := exec.Command("apt-get", "download", "busybox")
	dl.Dir = dir
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download busybox: %w\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "busybox_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download busybox: got %v", debs)
	}
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	data, err := os.ReadFile(filepath.Join(x, "bin", "busybox"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, bin)
}
