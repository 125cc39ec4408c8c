package overlay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/snapshotter-overlay/overlay"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runner"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/testkit"
)

func TestConformance(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(overlay.New))
}

// The other settings change how removal, labels and mounts are done: the
// cases that exercise those run again with them.
func TestConformanceConfigured(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	snapshottest.Run(conformance.Go(t),
		snapshottest.InProcess(overlay.New, conformance.WithConfig(json.RawMessage(`{"sync_remove": true, "upperdir_label": true, "mount_options": ["index=off", "volatile"]}`))),
		conformance.WithRun(regexp.MustCompile(`^(Lifecycle|LayerChain|ViewIsReadOnly|Usage|Restart|Cleanup|Opaque.*|Rename.*|ChildChange.*)$`)))
}

func open(t *testing.T, root, config string) snapshot.Snapshotter {
	t.Helper()
	s, err := overlay.New(context.Background(), sdk.Env{Root: root, Config: []byte(config)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mountOn mounts ms on a fresh dir, unmounted at the end of the test.
func mountOn(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(ms, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mount.Unmount(dir) })
	return dir
}

// commit makes the committed snapshot name on parent, running write in it.
func commit(t *testing.T, s snapshot.Snapshotter, name, parent string, write func(dir string) error) {
	t.Helper()
	ctx := context.Background()
	ms, err := s.Prepare(ctx, name+"-active", parent)
	if err != nil {
		t.Fatal(err)
	}
	if write != nil {
		dir := mountOn(t, ms)
		if err := write(dir); err != nil {
			t.Fatal(err)
		}
		if err := mount.Unmount(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(ctx, name, name+"-active"); err != nil {
		t.Fatal(err)
	}
}

func TestMountShapes(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, `{"mount_options": ["index=off", "volatile"]}`)
	fs := func(id string) string { return filepath.Join(root, "snapshots", id, "fs") }

	commit(t, s, "base", "", nil) // id 1
	commit(t, s, "mid", "base", nil)
	for _, c := range []struct {
		kind   snapshot.Kind
		key    string
		parent string
		want   string
	}{
		{snapshot.KindActive, "a0", "", fmt.Sprintf("[{bind %s  [rbind rw]}]", fs("3"))},
		{snapshot.KindView, "v0", "", fmt.Sprintf("[{bind %s  [rbind ro]}]", fs("4"))},
		{snapshot.KindView, "v1", "base", fmt.Sprintf("[{bind %s  [rbind ro]}]", fs("1"))},
		{snapshot.KindView, "v2", "mid", fmt.Sprintf("[{overlay overlay  [lowerdir=%s:%s index=off]}]", fs("2"), fs("1"))},
		{snapshot.KindActive, "a2", "mid", fmt.Sprintf("[{overlay overlay  [lowerdir=%s:%s upperdir=%s workdir=%s index=off volatile]}]",
			fs("2"), fs("1"), fs("7"), filepath.Join(root, "snapshots", "7", "work"))},
	} {
		var ms []mount.Mount
		var err error
		if c.kind == snapshot.KindView {
			ms, err = s.View(ctx, c.key, c.parent)
		} else {
			ms, err = s.Prepare(ctx, c.key, c.parent)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(ms); got != c.want {
			t.Errorf("%s %s on %q:\n got %s\nwant %s", c.kind, c.key, c.parent, got, c.want)
		}
		mountOn(t, ms) // and the kernel takes it
	}
}

// tryMount mounts ms on a fresh dir and unmounts it at once.
func tryMount(t *testing.T, ms []mount.Mount) error {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(ms, dir); err != nil {
		return err
	}
	return mount.Unmount(dir)
}

// TestVolatileRemount: with volatile configured, an active snapshot mounts
// again once its first mount is gone (overlay refuses a work dir a
// volatile mount used until the plugin clears its mark), but not while a
// mount of it is live, nor after a restart of the system (simulated: the
// boot the plugin recorded is another).
func TestVolatileRemount(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, `{"mount_options": ["volatile"]}`)
	commit(t, s, "base", "", nil)
	ms, err := s.Prepare(ctx, "a", "base")
	if err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(root, "snapshots", "2", "work", "work", "incompat", "volatile")
	bootRecord := filepath.Join(root, "snapshots", "2", "volatile-boot")

	dir := mountOn(t, ms)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("overlay's volatile mark: %v (the test checks nothing without it)", err)
	}
	// Live: the mark stays and overlay refuses a second mount.
	ms, err = s.Mounts(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); err != nil {
		t.Errorf("the mark of a live mount was removed: %v", err)
	}
	if err := tryMount(t, ms); !errors.Is(err, unix.EINVAL) {
		t.Errorf("second mount while the first is live: %v, want EINVAL", err)
	}

	// Unmounted: mounts again, twice, with what was written.
	if err := mount.Unmount(dir); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		ms, err = s.Mounts(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		dir = mountOn(t, ms)
		if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "one" {
			t.Errorf("mount %d: f = %q, %v", i+2, b, err)
		}
		if err := mount.Unmount(dir); err != nil {
			t.Fatal(err)
		}
	}

	// After a restart of the system the mark stays: the upper dir may have
	// lost writes.
	if err := os.WriteFile(bootRecord, []byte("00000000-0000-0000-0000-000000000000"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ms, err = s.Mounts(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := tryMount(t, ms); !errors.Is(err, unix.EINVAL) {
		t.Errorf("mount of a snapshot mounted volatile in another boot: %v, want EINVAL", err)
	}
}

// TestDeepChain: 128 committed layers, each adding a file, mount as one
// overlay although their lowerdir option passes mount(2)'s page.
func TestDeepChain(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	ctx := context.Background()
	s := open(t, t.TempDir(), `{}`)
	parent := ""
	for i := range 128 {
		name := fmt.Sprintf("l%03d", i)
		commit(t, s, name, parent, func(dir string) error {
			return os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
		})
		parent = name
	}
	ms, err := s.Prepare(ctx, "top", parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(strings.Join(ms[0].Options, ",")) < os.Getpagesize() || !strings.HasPrefix(ms[0].Options[0], "lowerdir+=") {
		t.Fatalf("options of 128 layers fit a page or use lowerdir=: %.200v", ms[0].Options)
	}
	dir := mountOn(t, ms)
	for i := range 128 {
		name := fmt.Sprintf("l%03d", i)
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != name {
			t.Fatalf("file of layer %d: %q, %v", i, b, err)
		}
	}
}

// singleLowerdir is the overlay snapshotter with the mistake the suite's
// DeepChain case is there to catch: its overlay mounts name the whole
// chain in one lowerdir=A:B:C option, as a plugin formatting mount(2)'s
// data string itself would. Past a page of options neither mount(2) nor
// fsconfig(2) (256 bytes a value) takes it.
type singleLowerdir struct{ snapshot.Snapshotter }

func (s singleLowerdir) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	return joinLowers(ms), err
}

func (s singleLowerdir) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.View(ctx, key, parent, opts...)
	return joinLowers(ms), err
}

func (s singleLowerdir) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Mounts(ctx, key)
	return joinLowers(ms), err
}

// joinLowers folds lowerdir+= options into one lowerdir= option.
func joinLowers(ms []mount.Mount) []mount.Mount {
	out := slices.Clone(ms)
	for i, m := range out {
		var lowers, rest []string
		for _, o := range m.Options {
			if l, ok := strings.CutPrefix(o, "lowerdir+="); ok {
				lowers = append(lowers, l)
			} else {
				rest = append(rest, o)
			}
		}
		if len(lowers) > 0 {
			out[i].Options = append([]string{"lowerdir=" + strings.Join(lowers, ":")}, rest...)
		}
	}
	return out
}

// freshUpper is the overlay snapshotter with the mistake the suite's
// RootAttributes case is there to catch: an active snapshot's upper dir
// keeps Mkdir's mode and owner instead of taking its parent's.
type freshUpper struct{ snapshot.Snapshotter }

func (s freshUpper) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	ms, err := s.Snapshotter.Prepare(ctx, key, parent, opts...)
	for _, m := range ms {
		for _, o := range m.Options {
			if upper, ok := strings.CutPrefix(o, "upperdir="); ok {
				err = errors.Join(err, os.Chown(upper, 0, 0), os.Chmod(upper, 0o755))
			}
		}
	}
	return ms, err
}

// TestSuiteCatchesMistakes: the suite's cases pass the overlay snapshotter
// and fail it once it makes the mistake each is there to catch.
func TestSuiteCatchesMistakes(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	wrapped := func(wrap func(snapshot.Snapshotter) snapshot.Snapshotter) snapshot.Factory {
		return func(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
			s, err := overlay.New(ctx, env)
			if err != nil {
				return nil, err
			}
			return wrap(s), nil
		}
	}
	for _, c := range []struct {
		name     string
		caseName string
		factory  snapshot.Factory
		want     string
	}{
		{"overlay", "DeepChain", overlay.New, "pass"},
		{"single-lowerdir", "DeepChain", wrapped(func(s snapshot.Snapshotter) snapshot.Snapshotter { return singleLowerdir{s} }), "fail"},
		{"overlay", "RootAttributes", overlay.New, "pass"},
		{"fresh-upper", "RootAttributes", wrapped(func(s snapshot.Snapshotter) snapshot.Snapshotter { return freshUpper{s} }), "fail"},
	} {
		t.Run(c.caseName+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			results := runner.RunSuite(t.Context(), func(ct conformance.T) {
				snapshottest.Run(ct, snapshottest.InProcess(c.factory), conformance.WithRun(regexp.MustCompile("^"+c.caseName+"$")))
			})
			if got := runner.StatusByCase(results)[c.caseName]; got != c.want {
				t.Errorf("%s: %q, want %q (results: %+v)", c.caseName, got, c.want, results)
			}
			for _, r := range results {
				for _, m := range r.Messages {
					t.Logf("%s: …%s", r.Name, m[max(0, len(m)-300):]) // a mount error ends a long list of mounts
				}
			}
		})
	}
}

// TestWhiteoutFormat: deletions and opaque dirs made through the mount are
// in the kernel's format in the committed layer.
func TestWhiteoutFormat(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	root := t.TempDir()
	s := open(t, root, `{}`)
	commit(t, s, "base", "", func(dir string) error {
		if err := os.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "d", "old"), nil, 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
	})
	commit(t, s, "child", "base", func(dir string) error {
		if err := os.Remove(filepath.Join(dir, "f")); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(dir, "d")); err != nil {
			return err
		}
		return os.Mkdir(filepath.Join(dir, "d"), 0o755)
	})
	layer := filepath.Join(root, "snapshots", "2", "fs")
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(layer, "f"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout of f: mode %o rdev %d, %v; want a 0/0 character device", st.Mode, st.Rdev, err)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(layer, "d"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque d: trusted.overlay.opaque = %q, %v; want y", buf[:n], err)
	}
}

// unprivilegedEnv marks the run of TestUnprivilegedStart as nobody.
const unprivilegedEnv = "KEEL_TEST_UNPRIVILEGED"

// TestUnprivilegedStart: without the privilege to mount, the plugin cannot
// check its root; it says so in a warning and starts.
func TestUnprivilegedStart(t *testing.T) {
	if os.Getenv(unprivilegedEnv) == "" {
		t.Logf("%s", testkit.RunAs(t, testkit.Nobody, testkit.Nobody, t.Name(), unprivilegedEnv+"=1"))
		return
	}
	var log bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &log, Level: hclog.Warn})
	s, err := overlay.New(context.Background(), sdk.Env{Root: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatalf("start as uid %d: %v", os.Geteuid(), err)
	}
	s.Close()
	if !strings.Contains(log.String(), "cannot check the root for overlay without the privilege to mount") ||
		!strings.Contains(log.String(), "operation not permitted") {
		t.Errorf("start as uid %d logged %q; want the warning, with the EPERM", os.Geteuid(), log.String())
	}
}

// TestRefusesOverlayRoot: a root on overlayfs cannot hold upper dirs, and
// Configure says so.
func TestRefusesOverlayRoot(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	base := t.TempDir()
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := mount.Overlay([]string{filepath.Join(base, "l")}, filepath.Join(base, "u"), filepath.Join(base, "w"))
	if err := m.Mount(filepath.Join(base, "m")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mount.Unmount(filepath.Join(base, "m")) })
	root := filepath.Join(base, "m", "root")
	_, err := overlay.New(context.Background(), sdk.Env{Root: root})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "(overlay) cannot host overlay upper dirs") {
		t.Fatalf("New on an overlay root: got %v, want a FailedPrecondition naming overlay", err)
	}
	t.Logf("refusal: %v", err)
}

func TestConfig(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{`{"root": "relative"}`, "not absolute"},
		{`{"sync": true}`, `config key "sync": unknown key`},
		{`{"mount_options": "volatile"}`, `config key "mount_options": want []string, got string`},
	} {
		_, err := overlay.New(context.Background(), sdk.Env{Root: t.TempDir(), Config: []byte(c.config)})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %s: got %v, want InvalidArgument with %q", c.config, err, c.want)
		}
	}
	testkit.RequireRoot(t, "mount overlays")
	// root moves everything there.
	other := t.TempDir()
	s := open(t, t.TempDir(), fmt.Sprintf(`{"root": %q}`, other))
	if _, err := s.Prepare(context.Background(), "a", ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"metadata.db", "snapshots/1/fs"} {
		if _, err := os.Stat(filepath.Join(other, p)); err != nil {
			t.Errorf("config root: %v", err)
		}
	}
}

func TestUpperdirLabel(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, `{"upperdir_label": true}`)
	commit(t, s, "base", "", nil)
	if _, err := s.Prepare(ctx, "a", "base", snapshot.WithLabels(map[string]string{"x": "y"})); err != nil {
		t.Fatal(err)
	}
	for key, id := range map[string]string{"base": "1", "a": "2"} {
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(root, "snapshots", id, "fs"); info.Labels[overlay.LabelUpperdir] != want {
			t.Errorf("%s: label %q = %q, want %q", key, overlay.LabelUpperdir, info.Labels[overlay.LabelUpperdir], want)
		}
	}
}

// TestCleanupOrphans plants what crashes leave: a snapshot dir no record
// owns and trash. Cleanup removes them and nothing else.
func TestCleanupOrphans(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, `{}`)
	if _, err := s.Prepare(ctx, "live", ""); err != nil {
		t.Fatal(err)
	}
	orphans := []string{filepath.Join(root, "snapshots", "999", "fs"), filepath.Join(root, "trash", "7", "fs")}
	for _, o := range orphans {
		if err := os.MkdirAll(o, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.(snapshot.Cleaner).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, o := range orphans {
		if _, err := os.Stat(filepath.Dir(o)); !os.IsNotExist(err) {
			t.Errorf("orphan %s survived cleanup: %v", o, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", "1", "fs")); err != nil {
		t.Errorf("live snapshot: %v", err)
	}
}

// TestStartSweepsOverlayCheck: the overlay check a killed plugin was doing
// (its scratch dir, its overlay mounted) is gone once the plugin starts.
func TestStartSweepsOverlayCheck(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	root := t.TempDir()
	merged := filepath.Join(root, "snapshots", mount.OverlayCheckPrefix+"123", "merged")
	if err := os.MkdirAll(merged, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", merged, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	open(t, root, `{}`)
	if _, err := os.Stat(filepath.Dir(merged)); !os.IsNotExist(err) {
		t.Errorf("the killed check's scratch dir after a start: %v", err)
	}
}
