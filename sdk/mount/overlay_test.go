package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/testkit"
)

func TestOverlayOptions(t *testing.T) {
	short := []string{"/l/2", "/l/1"}
	long := make([]string, 128)
	for i := range long {
		long[i] = fmt.Sprintf("/var/lib/keel/plugins/snapshotter.overlay/snapshots/%d/fs", 128-i)
	}
	for _, c := range []struct {
		name         string
		lowers       []string
		upper        string
		extra        []string
		want         []string // a prefix of the options
		wantCount    int
		wantLowerAdd bool
	}{
		{"short-rw", short, "/u", []string{"index=off"}, []string{"lowerdir=/l/2:/l/1", "upperdir=/u", "workdir=/w", "index=off"}, 4, false},
		{"short-ro", short, "", nil, []string{"lowerdir=/l/2:/l/1"}, 1, false},
		{"deep-rw", long, "/u", []string{"volatile"}, []string{"lowerdir+=" + long[0], "lowerdir+=" + long[1]}, 131, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := Overlay(c.lowers, c.upper, "/w", c.extra...)
			if m.Type != "overlay" || len(m.Options) != c.wantCount {
				t.Fatalf("Overlay = %+v", m)
			}
			for i, w := range c.want {
				if m.Options[i] != w {
					t.Errorf("option %d = %q, want %q", i, m.Options[i], w)
				}
			}
			if got := strings.HasPrefix(m.Options[0], "lowerdir+="); got != c.wantLowerAdd {
				t.Errorf("lowerdir+= form: %v, want %v", got, c.wantLowerAdd)
			}
			if c.wantLowerAdd && m.Options[len(m.Options)-1] != c.extra[len(c.extra)-1] {
				t.Errorf("extra options not last: %v", m.Options[len(m.Options)-3:])
			}
		})
	}
}

// TestOverlayDeepChain mounts 128 lower dirs with long absolute paths,
// past mount(2)'s page: Mount takes the fsconfig path.
func TestOverlayDeepChain(t *testing.T) {
	testkit.RequireRoot(t, "mount")
	base := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 2))
	var lowers []string
	for i := range 128 {
		d := filepath.Join(base, "snapshots", fmt.Sprint(i), "fs")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append([]string{d}, lowers...) // topmost first
	}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := Overlay(lowers, filepath.Join(base, "upper"), filepath.Join(base, "work"))
	if _, data := parseOptions(m.Options); fitsPage(data) {
		t.Fatalf("the test's options fit a page (%d bytes): it checks nothing", len(data))
	}
	target := filepath.Join(base, "merged")
	if err := All([]Mount{m}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(target) })
	entries, err := os.ReadDir(target)
	if err != nil || len(entries) != 128 {
		t.Fatalf("merged dir has %d entries, %v; want 128", len(entries), err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "f000")); err != nil || string(b) != "0" {
		t.Errorf("bottom layer's file: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err != nil {
		t.Errorf("write through the deep mount: %v", err)
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
}

func TestCheckOverlay(t *testing.T) {
	testkit.RequireRoot(t, "mount")
	if err := CheckOverlay(t.TempDir()); err != nil {
		t.Fatalf("a temp dir on %s: %v", FSType(os.TempDir()), err)
	}

	// An overlay's own tree is refused as a home for upper dirs.
	base := t.TempDir()
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := Overlay([]string{filepath.Join(base, "l")}, filepath.Join(base, "u"), filepath.Join(base, "w"))
	if err := m.Mount(filepath.Join(base, "m")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(base, "m"), unix.MNT_DETACH) })
	err := CheckOverlay(filepath.Join(base, "m"))
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "(overlay) cannot host overlay upper dirs") {
		t.Errorf("check on overlay: got %v, want a FailedPrecondition naming overlay", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(base, "m")); len(entries) != 0 {
		t.Errorf("the refused check left %v", entries)
	}
}

// unprivilegedEnv marks the run of TestCheckOverlayUnprivileged as nobody.
const unprivilegedEnv = "KEEL_TEST_UNPRIVILEGED"

// TestCheckOverlayUnprivileged: without the privilege to mount, the
// check's error is EPERM, and not the filesystem's refusal. The check runs
// in the test binary started again as nobody.
func TestCheckOverlayUnprivileged(t *testing.T) {
	if os.Getenv(unprivilegedEnv) == "" {
		t.Logf("%s", testkit.RunAs(t, testkit.Nobody, testkit.Nobody, t.Name(), unprivilegedEnv+"=1"))
		return
	}
	dir := t.TempDir()
	err := CheckOverlay(dir)
	if !errors.Is(err, syscall.EPERM) || !errors.Is(err, os.ErrPermission) || errdefs.IsFailedPrecondition(err) {
		t.Fatalf("check as uid %d: %v; want EPERM, no FailedPrecondition", os.Geteuid(), err)
	}
	t.Logf("check as uid %d: %v", os.Geteuid(), err)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the unprivileged check left %v", entries)
	}
}
