package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// A user's first session: what a new user types, right after the README.

// userImageFiles are the passwd and group files of an image with a
// non-root user "app" (member of staff and audio) and a service user.
var userImageFiles = map[string]string{
	"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:1001:1002::/:/bin/false\n",
	"etc/group":  "root:x:0:\napp:x:1000:app\nstaff:x:50:app,svc\nsvcgrp:x:1002:\naudio:x:29:app\n",
}

// pushUserImage pushes an image whose config says User user to k's
// registry as repo:v1 and returns its reference.
func (k *runKeeld) pushUserImage(t *testing.T, repo, user string) string {
	t.Helper()
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, Files: userImageFiles, User: user})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.reg.PushImage(t.Context(), repo, "v1", img); err != nil {
		t.Fatal(err)
	}
	return k.reg.Host + "/" + repo + ":v1"
}

// ids is what `id -u; id -g; id -G` printed, the groups sorted.
func ids(t *testing.T, out string) (uid, gid string, groups []string) {
	t.Helper()
	f := strings.Split(strings.TrimSpace(out), "\n")
	if len(f) != 3 {
		t.Fatalf("id printed %q", out)
	}
	groups = strings.Fields(f[2])
	slices.Sort(groups)
	return f[0], f[1], groups
}

const idScript = "/bin/busybox id -u; /bin/busybox id -g; /bin/busybox id -G"

// TestRunImageUser: an image whose config names a user runs as that user,
// with its primary and supplementary groups from the image's files; --user
// takes the same forms, as does task exec --user.
func TestRunImageUser(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	tests := []struct {
		image, user string // config User, --user
		snapshotter string // "" for keeld's default
		uid, gid    string
		groups      []string
	}{
		{image: "app", uid: "1000", gid: "1000", groups: []string{"1000", "29", "50"}},
		{image: "app", snapshotter: "overlay", uid: "1000", gid: "1000", groups: []string{"1000", "29", "50"}},
		{image: "app:staff", uid: "1000", gid: "50", groups: []string{"29", "50"}},
		{image: "1001:svcgrp", uid: "1001", gid: "1002", groups: []string{"1002", "50"}},
		{image: "1000", uid: "1000", gid: "1000", groups: []string{"1000", "29", "50"}},
		{image: "4242", uid: "4242", gid: "0", groups: []string{"0"}},
		{image: "app", user: "svc", uid: "1001", gid: "1002", groups: []string{"1002", "50"}},
		{image: "app", user: "root", uid: "0", gid: "0", groups: []string{"0"}},
		{image: "app", user: "app:7", uid: "1000", gid: "7", groups: []string{"29", "50", "7"}},
	}
	refs := map[string]string{}
	for i, tt := range tests {
		ref, ok := refs[tt.image]
		if !ok {
			ref = k.pushUserImage(t, "e2e/user"+strings.NewReplacer(":", "-").Replace(tt.image), tt.image)
			k.ok("image", "pull", "-q", ref)
			refs[tt.image] = ref
		}
		args := []string{"run", "--rm"}
		if tt.snapshotter != "" {
			args = append(args, "--snapshotter", tt.snapshotter)
		}
		if tt.user != "" {
			args = append(args, "--user", tt.user)
		}
		r := k.keel(append(args, ref, "user"+string(rune('a'+i)), "sh", "-c", idScript)...)
		if r.code != 0 {
			t.Errorf("User %q --user %q on %q: %v", tt.image, tt.user, tt.snapshotter, r)
			continue
		}
		uid, gid, groups := ids(t, r.stdout)
		if uid != tt.uid || gid != tt.gid || !slices.Equal(groups, tt.groups) {
			t.Errorf("User %q --user %q on %q: %s:%s %v, want %s:%s %v", tt.image, tt.user, tt.snapshotter, uid, gid, groups, tt.uid, tt.gid, tt.groups)
		}
	}

	// A name the image does not know: one line naming it.
	for _, user := range []string{"nobody", "app:nogroup"} {
		r := k.keel("run", "--rm", "--user", user, refs["app"], "bad", "true")
		name := strings.TrimPrefix(strings.TrimPrefix(user, "app:"), "")
		if line := oneLineError(t, r); !strings.Contains(line, `"`+name+`"`) || !strings.Contains(line, "not found") {
			t.Errorf("--user %s: %s", user, line)
		}
	}
	if out := k.ok("container", "ls", "-q"); out != "" {
		t.Errorf("containers left by failed runs: %q", out)
	}
	if out := k.ok("snapshot", "ls", "-q"); strings.Contains(out, "bad") {
		t.Errorf("rootfs snapshot left by a failed run:\n%s", out)
	}

	// exec --user resolves in the running container.
	k.ok("run", "-d", refs["app"], "long", "/bin/busybox", "sleep", "600")
	out := k.ok("task", "exec", "--user", "svc", "long", "sh", "-c", idScript)
	if uid, gid, groups := ids(t, out); uid != "1001" || gid != "1002" || !slices.Equal(groups, []string{"1002", "50"}) {
		t.Errorf("exec --user svc: %s:%s %v", uid, gid, groups)
	}
	k.ok("task", "kill", "long")
	k.ok("container", "rm", "--force", "long")
}

// TestImageNames: a name as typed finds the record pull (or tag) made under
// its normalized name, for every command that takes an image.
func TestImageNames(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	// Pulled without a tag: recorded as :latest.
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.reg.PushImage(t.Context(), "e2e/plain", "latest", img); err != nil {
		t.Fatal(err)
	}
	short := k.reg.Host + "/e2e/plain"
	if out := k.ok("image", "pull", short); !strings.Contains(out, "pulled "+short+":latest ") {
		t.Errorf("pull printed %q", out)
	}
	// Docker Hub names: tag the image as busybox (docker.io/library/busybox:latest).
	if out := k.ok("image", "tag", short, "busybox"); strings.TrimSpace(out) != "docker.io/library/busybox:latest" {
		t.Errorf("tag printed %q", out)
	}
	dgst := img.Manifest.Desc.Digest.String()
	for _, name := range []string{short, "busybox", "library/busybox:latest", "docker.io/busybox", "busybox@" + dgst, short + "@" + dgst} {
		if r := k.keel("run", "--rm", name, "names", "sh", "-c", "exit 0"); r.code != 0 {
			t.Errorf("run %s: %v", name, r)
		}
		var got struct{ Name string }
		if err := jsonOf(k.ok("image", "inspect", name), &got); err != nil || !strings.HasSuffix(got.Name, ":latest") {
			t.Errorf("inspect %s: %+v %v", name, got, err)
		}
	}
	dir := mountDir(t, k.env, "names")
	k.ok("image", "mount", "busybox", dir)
	k.ok("image", "unmount", dir)
	k.ok("image", "export", filepath.Join(k.env.dir, "bb.tar"), "busybox")
	k.ok("image", "push", k.reg.Host+"/e2e/pushed", short)
	k.ok("image", "tag", "busybox", "busybox:two")
	k.ok("image", "rm", "busybox:two", "busybox")
	if r := k.keel("image", "inspect", "docker.io/library/busybox:latest"); r.code == 0 {
		t.Errorf("busybox left after rm: %v", r)
	}
	// Not there: the message names the name typed and what it means.
	line := oneLineError(t, k.keel("run", "--rm", "alpine", "nope", "true"))
	if !strings.Contains(line, `"alpine"`) || !strings.Contains(line, "docker.io/library/alpine:latest") || !strings.Contains(line, "pull it first") {
		t.Errorf("run of an absent image: %s", line)
	}
}

// TestRunHostNetwork: a --net host container gets copies of the host's
// resolv.conf and hosts (keeld's, under its state dir, gone with the
// container) and the host's name; writing them leaves the host's alone.
func TestRunHostNetwork(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	hostHosts, _ := os.ReadFile("/etc/hosts")
	r := k.keel("run", "--rm", "--net", "host", k.ref, "hostnet", "sh", "-c",
		"/bin/busybox cat /etc/resolv.conf; echo ---; /bin/busybox cat /etc/hosts; echo ---; /bin/busybox hostname; /bin/busybox cat /etc/hostname; echo changed >> /etc/hosts && echo written")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	parts := strings.Split(r.stdout, "---\n")
	if len(parts) != 3 {
		t.Fatalf("output: %q", r.stdout)
	}
	if parts[0] != string(hostResolv) || parts[1] != string(hostHosts) {
		t.Errorf("resolv.conf %q / hosts %q: not the host's %q / %q", parts[0], parts[1], hostResolv, hostHosts)
	}
	if want := host + "\n" + host + "\nwritten\n"; parts[2] != want {
		t.Errorf("hostname, /etc/hostname, write: %q, want %q", parts[2], want)
	}
	if now, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(now, hostHosts) {
		t.Errorf("the host's /etc/hosts changed")
	}
	// The copies went with the container.
	eventually(t, 5*time.Second, "copies removed", func() error {
		matches, _ := filepath.Glob(filepath.Join(k.env.state, "containers", "*", "hostnet"))
		if len(matches) > 0 {
			return os.ErrExist
		}
		return nil
	})
	// Without --net host, none of this: the container's own hostname.
	if out := k.ok("run", "--rm", k.ref, "ownnet", "/bin/busybox", "hostname"); strings.TrimSpace(out) == host && host != "keel" {
		t.Errorf("a container of its own network has the host's name %q", out)
	}
}

// TestImportThenRun: an imported image unpacks on import; one imported with
// --no-unpack is unpacked by run.
func TestImportThenRun(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, Docker: true, Extra: []byte("imported\n")})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(k.env.dir, "saved.tar")
	if err := os.WriteFile(tarPath, dockerSave(t, img, "e2e/imported:v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		snapshotter string
		flags       []string
	}{
		{"native", nil},
		{"overlay", []string{"--no-unpack"}},
	} {
		k.ok(append(append([]string{"image", "import"}, tt.flags...), "--snapshotter", tt.snapshotter, tarPath)...)
		r := k.keel("run", "--rm", "--snapshotter", tt.snapshotter, "e2e/imported:v1", "imp-"+tt.snapshotter, "/bin/busybox", "cat", "/extra")
		if r.code != 0 || r.stdout != "imported\n" {
			t.Errorf("run after import %v on %s: %v", tt.flags, tt.snapshotter, r)
		}
		k.ok("image", "rm", "--sync", "e2e/imported:v1")
	}
}

// TestCLIFailsFast: a command that cannot reach keeld says why within a
// second; an unknown subcommand is an error naming it.
func TestCLIFailsFast(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "kf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	stale := filepath.Join(dir, "stale.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd) // bound, never listening: what a killed keeld leaves
	tests := []struct {
		name, socket, cause string
		uid                 int
	}{
		{"Stale", stale, "connection refused", 0},
		{"Missing", filepath.Join(dir, "none.sock"), "no such file", 0},
	}
	if os.Geteuid() == 0 {
		// keeld's own socket, 0660 root:root, reached as nobody through
		// directories open to it: only the socket's mode refuses.
		k := newEnv(t).start(t)
		os.Chmod(k.env.dir, 0o755)
		tests = append(tests, struct {
			name, socket, cause string
			uid                 int
		}{"Forbidden", k.env.socket, "permission denied", 65534})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			cmd := exec.Command(filepath.Join(binDir, "keel"), "--address", tt.socket, "image", "ls")
			if tt.uid != 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(tt.uid), Gid: uint32(tt.uid)}}
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %s", d)
			}
			if err == nil || !strings.Contains(stderr.String(), tt.cause) || !strings.Contains(stderr.String(), tt.socket) ||
				strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("err %v, stderr %q: want one line naming %s and %q", err, stderr.String(), tt.socket, tt.cause)
			}
		})
	}
	t.Run("UnknownSubcommand", func(t *testing.T) {
		for _, args := range [][]string{{"image", "chek"}, {"image", "pul"}, {"task", "lss"}, {"bogus"}} {
			r := runKeel(t, stale, nil, args...)
			line := oneLineError(t, r)
			if !strings.Contains(line, `unknown command "`+args[len(args)-1]+`" for "keel`) || r.stdout != "" {
				t.Errorf("keel %v: %v", args, r)
			}
		}
		if line := oneLineError(t, runKeel(t, stale, nil, "image", "pul")); !strings.Contains(line, `did you mean "pull"`) {
			t.Errorf("no suggestion: %s", line)
		}
	})
}

// jsonOf decodes out, a command's JSON output, into v.
func jsonOf(out string, v any) error { return json.Unmarshal([]byte(out), v) }
