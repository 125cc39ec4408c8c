package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
)

const examplePath = "../../config.hcl.example"

func TestExampleParses(t *testing.T) {
	c, err := Load(examplePath)
	if err != nil {
		t.Fatalf("config.hcl.example:\n%v", err)
	}
	if c.DefaultSnapshotter != "overlay" || c.Plugin(sdk.KindContent, "local") == nil {
		t.Errorf("example configures %+v, want the overlay snapshotter by default and the local content store", c.Plugins)
	}
	for _, name := range []string{"native", "overlay", "btrfs"} {
		if c.Plugin(sdk.KindSnapshotter, name) == nil {
			t.Errorf("example lacks the %s snapshotter", name)
		}
	}
}

// TestExampleCommentedPlugins uncomments the example's commented-out plugin
// blocks (those later issues add), which must parse too.
func TestExampleCommentedPlugins(t *testing.T) {
	src, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, `# plugin "`) {
			in = true
		}
		if in {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		}
		if line == "}" {
			in = false
		}
		out = append(out, line)
	}
	c, err := Parse([]byte(strings.Join(out, "\n")), "uncommented.hcl")
	if err != nil {
		t.Fatalf("uncommented example:\n%v", err)
	}
	for _, kind := range sdk.Kinds {
		if len(c.PluginsOf(kind)) == 0 {
			t.Errorf("the example shows no %s plugin", kind)
		}
	}
	if n := len(c.PluginsOf(sdk.KindSnapshotter)); n != 3 {
		t.Errorf("uncommented example has %d snapshotters, want native, overlay, btrfs", n)
	}
}

// TestExampleDocumentsEveryKey: every key of the schema is written in the
// example (set or as a commented example) and named in a comment.
func TestExampleDocumentsEveryKey(t *testing.T) {
	src, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	checkEveryKey(t, "config.hcl.example", src)
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.DefaultSnapshotter != "overlay" {
		t.Errorf("default snapshotter %q, want overlay", c.DefaultSnapshotter)
	}
	for _, want := range []struct{ kind, name, file string }{
		{sdk.KindSnapshotter, "overlay", "keel-snapshotter-overlay"},
		{sdk.KindSnapshotter, "native", "keel-snapshotter-native"},
		{sdk.KindContent, "local", "keel-content-local"},
	} {
		p := c.Plugin(want.kind, want.name)
		if p == nil {
			t.Errorf("default has no %s.%s", want.kind, want.name)
			continue
		}
		if exp := filepath.Join(filepath.Dir(testExecutable), want.file); p.Path != exp {
			t.Errorf("%s path %q, want %q beside keeld", p.Instance(), p.Path, exp)
		}
	}
	// The golden default case is the embedded file itself.
	golden, err := os.ReadFile("testdata/default.hcltest")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(golden), string(defaultHCL)+separator) {
		t.Error("testdata/default.hcltest does not start with default.hcl: copy it over and run -update")
	}
}

// TestPickDefaultSnapshotter: the default keeps overlay where the root
// can host it and native elsewhere; other configs are left alone.
func TestPickDefaultSnapshotter(t *testing.T) {
	defer func(f func(string) error) { checkOverlay = f }(checkOverlay)
	for _, c := range []struct {
		name  string
		check func(string) error
		want  string
	}{
		{"overlay-ok", func(string) error { return nil }, "overlay"},
		{"overlay-refused", func(string) error { return errors.New("root on overlay") }, "native"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkOverlay = c.check
			cfg := Default()
			cfg.Root = filepath.Join(t.TempDir(), "made")
			err := PickDefaultSnapshotter(cfg)
			if (err != nil) != (c.want == "native") {
				t.Errorf("reason: %v", err)
			}
			snaps := cfg.PluginsOf(sdk.KindSnapshotter)
			if cfg.DefaultSnapshotter != c.want || len(snaps) != 1 || snaps[0].Name != c.want {
				t.Errorf("default %q, snapshotters %+v; want only %s", cfg.DefaultSnapshotter, snaps, c.want)
			}
			if _, err := os.Stat(cfg.Root); err != nil {
				t.Errorf("root not made: %v", err)
			}
		})
	}
	// The real check, on this machine's temp dir.
	if os.Geteuid() == 0 {
		checkOverlay = mount.CheckOverlay
		cfg := Default()
		cfg.Root = t.TempDir()
		if err := PickDefaultSnapshotter(cfg); err != nil || cfg.DefaultSnapshotter != "overlay" {
			t.Errorf("temp dir on %s: picked %s: %v", mount.FSType(cfg.Root), cfg.DefaultSnapshotter, err)
		}
	}
}

func TestPluginDirs(t *testing.T) {
	c, err := Parse([]byte(`
root  = "/r"
state = "/s"
plugin "snapshotter" "a" { path = "keel-snapshotter-native" }
plugin "snapshotter" "b" {
  path = "keel-snapshotter-native"
  config { x = 1 }
}
default_snapshotter = "b"
plugin "content" "local" { path = "/abs/keel-content-local" }
`), "dirs.hcl")
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Plugin("snapshotter", "a"), c.Plugin("snapshotter", "b")
	if a.Path != b.Path {
		t.Fatalf("one binary, two paths: %q %q", a.Path, b.Path)
	}
	for _, tc := range []struct{ got, want string }{
		{a.Root(c), "/r/plugins/snapshotter.a"},
		{a.State(c), "/s/plugins/snapshotter.a"},
		{b.Root(c), "/r/plugins/snapshotter.b"},
		{b.State(c), "/s/plugins/snapshotter.b"},
		{c.GRPC.Address, "/s/keel.sock"},
		{c.Plugin("content", "local").Path, "/abs/keel-content-local"},
		{string(a.Config), "{}"},
		{string(b.Config), `{"x":1}`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}

	if r := c.PluginRange("snapshotter", "b"); r.Filename != "dirs.hcl" || r.Start.Line != 7 || r.Start.Column != 3 {
		t.Errorf("config block of snapshotter.b at %v, want dirs.hcl:7:3", r)
	}
	if r := c.PluginRange("snapshotter", "a"); r.Start.Line != 4 {
		t.Errorf("snapshotter.a (no config block) at %v, want its plugin block on line 4", r)
	}
	if r := c.PluginRange("runtime", "none"); r != (hcl.Range{}) {
		t.Errorf("unknown plugin has range %v", r)
	}
	err = c.PluginError("snapshotter", "b", errors.Join(errors.New(`unknown field "x"`), errdefs.ErrInvalidArgument))
	if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "dirs.hcl:7:3: snapshotter.b: ") {
		t.Errorf("PluginError = %v", err)
	}
}

func TestErrorType(t *testing.T) {
	_, err := Parse([]byte("log_level = \"x\"\nroot = \"r\"\n"), "bad.hcl")
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %T, want *Error", err)
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Error("config errors are not InvalidArgument")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(cerr.Diagnostics) || len(lines) != 3 {
		t.Fatalf("want one line per diagnostic (3), got:\n%v", err)
	}
	pos := regexp.MustCompile(`^bad\.hcl:\d+:\d+: `)
	for _, l := range lines {
		if !pos.MatchString(l) {
			t.Errorf("line %q does not start with file:line:col", l)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(path, defaultHCL, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrDefault(path); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "missing.hcl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("root = 1 +\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Errorf("error does not name the file: %v", err)
	}
}
