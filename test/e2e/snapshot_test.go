package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/mount"
)

// snapshotJSON is what `keel snapshot info` prints.
type snapshotJSON struct {
	Name   string            `json:"name"`
	Parent string            `json:"parent"`
	Kind   string            `json:"kind"`
	Labels map[string]string `json:"labels"`
}

// TestSnapshots: prepare a snapshot, mount it with the command keel prints,
// write a file, commit it, and see the file through a view of a child.
func TestSnapshots(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.start(t)

	info := func(key string) snapshotJSON {
		t.Helper()
		var s snapshotJSON
		if err := json.Unmarshal([]byte(k.ok("snapshot", "info", key)), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// prepare base --target: keel prints the mount(8) command; running it
	// mounts the active snapshot.
	dir := mountDir(t, e, "base")
	out := k.ok("snapshot", "prepare", "base-active", "--label", "stage=build", "--target", dir)
	if !strings.HasPrefix(out, "mount ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("prepare --target printed %q, want one mount command", out)
	}
	if b, err := exec.Command("sh", "-c", out).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", out, err, b)
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from base\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount(t, dir)
	if s := info("base-active"); s.Kind != "active" || s.Labels["stage"] != "build" {
		t.Errorf("info base-active: %+v, want active with stage=build", s)
	}

	// mounts prints the same command for the same key.
	if got := k.ok("snapshot", "mounts", dir, "base-active"); got != out {
		t.Errorf("mounts printed %q, prepare printed %q", got, out)
	}
	k.ok("snapshot", "commit", "base", "base-active")

	// A child of base sees the file and may change it.
	var ms []mount.Mount
	k.okJSON(&ms, "snapshot", "prepare", "child", "base", "--target", "/unused")
	child := mountDir(t, e, "child")
	if err := mount.All(ms, child); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(child, "hello.txt"), "hello from base\n")
	if err := os.WriteFile(filepath.Join(child, "child.txt"), []byte("child\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount(t, child)
	k.ok("snapshot", "commit", "child-1", "child")

	// A view of the committed child is read-only and holds both files.
	k.okJSON(&ms, "snapshot", "view", "child-view", "child-1", "--target", "/unused")
	view := mountDir(t, e, "view")
	if err := mount.All(ms, view); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(view, "hello.txt"), "hello from base\n")
	readFile(t, filepath.Join(view, "child.txt"), "child\n")
	if err := os.WriteFile(filepath.Join(view, "nope"), nil, 0o644); err == nil {
		t.Error("wrote into a view")
	}
	unmount(t, view)

	// ls, tree, info.
	var infos []struct {
		Name   string
		Parent string
		Kind   json.Number
		Labels map[string]string
	}
	k.okJSON(&infos, "snapshot", "ls")
	names := map[string]string{}
	for _, i := range infos {
		names[i.Name] = i.Parent
	}
	want := map[string]string{"base": "", "child-1": "base", "child-view": "child-1"}
	if len(names) != len(want) {
		t.Errorf("snapshot ls: %v, want %v", names, want)
	}
	for n, p := range want {
		if got, ok := names[n]; !ok || got != p {
			t.Errorf("snapshot ls: %s has parent %q (listed %v), want %q", n, got, ok, p)
		}
	}
	if got := strings.Fields(k.ok("snapshot", "ls", "-q")); strings.Join(got, " ") != "base child-1 child-view" {
		t.Errorf("snapshot ls -q: %q", got)
	}
	if got := strings.Fields(k.ok("snapshot", "ls", "-q", "parent==base")); strings.Join(got, " ") != "child-1" {
		t.Errorf("snapshot ls -q parent==base: %q", got)
	}
	tree := k.ok("snapshot", "tree")
	if want := "base (committed)\n  child-1 (committed)\n    child-view (view)\n"; tree != want {
		t.Errorf("snapshot tree:\n%s\nwant:\n%s", tree, want)
	}

	if s := info("base"); s.Kind != "committed" || s.Parent != "" {
		t.Errorf("info base: %+v", s)
	}
	if s := info("child-1"); s.Parent != "base" || s.Kind != "committed" {
		t.Errorf("info child-1: %+v", s)
	}

	// label sets and removes.
	if out := k.ok("snapshot", "label", "base", "stage=", "keep=yes"); strings.TrimSpace(out) != "keep=yes" {
		t.Errorf("snapshot label printed %q", out)
	}
	if s := info("base"); len(s.Labels) != 1 || s.Labels["keep"] != "yes" {
		t.Errorf("labels after label: %v", s.Labels)
	}

	// usage counts the files written.
	var usage []struct {
		Key    string `json:"key"`
		Size   int64
		Inodes int64
	}
	k.okJSON(&usage, "snapshot", "usage", "base")
	if len(usage) != 1 || usage[0].Key != "base" || usage[0].Size < int64(len("hello from base\n")) || usage[0].Inodes < 1 {
		t.Errorf("usage base: %+v", usage)
	}
	k.okJSON(&usage, "snapshot", "usage")
	if len(usage) != 3 {
		t.Errorf("usage of all: %+v", usage)
	}

	// Errors: one line, exit 1, the class said in words.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot", "rm", "base"}, `remove "base": snapshot has children`},
		{[]string{"snapshot", "info", "nosuch"}, "not found"},
		{[]string{"snapshot", "prepare", "base"}, "already exists"},
		{[]string{"snapshot", "commit", "x", "base"}, "failed precondition"}, // not active
		{[]string{"snapshot", "ls", "--snapshotter", "overlay"}, `"overlay"`},
	} {
		r := k.keel(tc.args...)
		if msg := oneLineError(t, r); !strings.Contains(msg, tc.want) {
			t.Errorf("keel %s: %q, want it to contain %q", strings.Join(tc.args, " "), msg, tc.want)
		}
	}

	// rm, children first.
	k.ok("snapshot", "rm", "child-view", "child-1")
	k.ok("snapshot", "rm", "base")
	if out := k.ok("snapshot", "ls", "-q"); out != "" {
		t.Errorf("snapshots left: %q", out)
	}
}

// mountDir makes an empty directory to mount on, unmounted at cleanup.
func mountDir(t *testing.T, e *env, name string) string {
	t.Helper()
	dir := filepath.Join(e.dir, "mnt-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mount.Unmount(dir) })
	return dir
}

func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := mount.Unmount(dir); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
}
