package critest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// The images critest v1.37.0 pulls (pkg/framework and pkg/validate), by
// upstream reference. Each stand-in is built here from busybox-static and
// pushed to a loopback registry under the reference's repository path; the
// runtime under test maps every upstream host onto that registry.
const (
	e2eImages = "registry.k8s.io/e2e-test-images/"
	criImages = "gcr.io/k8s-staging-cri-tools/"
)

// mirroredHosts are the registry hosts critest's references name (and
// docker.io, so that nothing can reach the internet): the runtime under
// test resolves each onto the loopback registry, with no fallback.
var mirroredHosts = []string{"registry.k8s.io", "k8s.gcr.io", "gcr.io", "docker.io", "quay.io"}

// sandboxImage is the pause stand-in the runtime's sandbox_image names; a
// tag of its own, so that critest removing pause:3.9 never touches it.
const sandboxImage = "registry.k8s.io/pause:3.10"

// digestPinned is the one reference critest pins by digest: an image
// built here cannot have that digest, so its specs are the only failures
// allowed.
const digestPinned = criImages + "test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"

// standIn is one image critest pulls and what its stand-in holds.
type standIn struct {
	refs []string // upstream references, each tagged
	// why says what critest checks of the image, which the stand-in keeps.
	why    string
	files  []tarEntry // added on top of the busybox layer
	config ocispec.ImageConfig
}

// standIns lists every image critest pulls but the digest-pinned one. bins
// holds the stand-in executables (buildStandInBins); shell is the layer
// entries of busybox's /bin/sh (nonStandaloneShell).
func standIns(bins map[string][]byte, shell []tarEntry) []standIn {
	webserver := func(exe string, port int, pid string, cmd ...string) standIn {
		args := append([]string{exe, "-port", fmt.Sprint(port)}, cmd...)
		if pid != "" {
			args = append(args, "-pid", pid)
		}
		return standIn{
			files:  []tarEntry{{name: strings.TrimPrefix(exe, "/"), data: bins["webserver"], mode: 0o755}},
			config: ocispec.ImageConfig{Cmd: args, ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", port): {}}},
		}
	}
	nginx := webserver("/usr/sbin/nginx", 80, "/var/run/nginx.pid")
	nginx.refs = []string{e2eImages + "nginx:1.14-2"}
	nginx.why = "HTTP on :80, process nginx, \"master process\" in /proc/1/cmdline, /var/run/nginx.pid"
	hostnet := webserver("/usr/sbin/nginx", 12003, "/var/run/nginx.pid")
	hostnet.refs = []string{criImages + "hostnet-nginx-amd64:latest"}
	hostnet.why = "nginx listening on :12003 (host network specs)"
	httpd := webserver("/usr/local/apache2/bin/httpd", 80, "")
	httpd.refs = []string{e2eImages + "httpd:2.4.39-4"}
	httpd.why = "HTTP on :80 and \"httpd\" in its log"

	pause := func(refs []string, why string, labels map[string]string) standIn {
		return standIn{
			refs: refs, why: why + ", /pause a stand-in",
			files:  []tarEntry{{name: "pause", data: bins["pause"], mode: 0o755}},
			config: ocispec.ImageConfig{Entrypoint: []string{"/pause"}, Labels: labels},
		}
	}
	user := func(name, u string) standIn {
		return standIn{refs: []string{criImages + name + ":latest"}, why: "config User " + u, config: ocispec.ImageConfig{User: u}}
	}
	// A file named after the image, as upstream's image-test Dockerfile
	// adds, makes images of different names differ.
	marked := func(file string, refs ...string) standIn {
		return standIn{refs: refs, why: "busybox and a file /" + file, files: []tarEntry{{name: file, mode: 0o644}}}
	}
	list := []standIn{
		{
			refs: []string{e2eImages + "busybox:1.29-2"},
			why: "busybox with every applet in /bin, ipcs and pgrep (stand-ins: Debian's busybox has neither), " +
				"and a /bin/sh that execs its commands (Debian's dynamic busybox, see shell_test.go)",
			files: append([]tarEntry{{name: "usr/bin/ipcs", data: bins["ipcs"], mode: 0o755}, {name: "usr/bin/pgrep", data: []byte(pgrep), mode: 0o755}}, shell...),
		},
		nginx, hostnet, httpd,
		{
			refs:   []string{e2eImages + "nonewprivs:1.3"},
			why:    "a setuid-root program printing \"Effective uid: N\"",
			files:  []tarEntry{{name: "usr/local/bin/nnp", data: bins["nnp"], mode: 0o4755}},
			config: ocispec.ImageConfig{Cmd: []string{"/usr/local/bin/nnp"}},
		},
		pause([]string{"registry.k8s.io/pause:3.9"}, "pause (critest pulls it from registry.k8s.io and k8s.gcr.io and wants one image with two tags)", nil),
		// A label of its own makes it another image than pause:3.9,
		// which would otherwise have a third tag.
		pause([]string{sandboxImage}, "the runtime's sandbox_image: pause", map[string]string{"org.keel-runtime.critest": "sandbox"}),
		user("test-image-user-uid", "1002"),
		user("test-image-user-username", "www-data"),
		user("test-image-user-uid-group", "1003:1004"),
		user("test-image-user-username-group", "www-data:1004"),
		{
			refs: []string{criImages + "test-image-predefined-group:latest"},
			why:  "user default-user (1000) in group group-defined-in-image (50000), config User 1000",
			files: []tarEntry{
				{name: "etc/passwd", data: []byte(basePasswd + "default-user:x:1000:1000::/home/default-user:/bin/sh\n"), mode: 0o644},
				{name: "etc/group", data: []byte(baseGroup + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"), mode: 0o644},
				{name: "home/default-user", dir: true, uid: 1000, gid: 1000},
			},
			config: ocispec.ImageConfig{User: "1000"},
		},
		marked("test-image-1", criImages+"test-image-1:latest"),
		marked("test-image-2", criImages+"test-image-2:latest"),
		marked("test-image-3", criImages+"test-image-3:latest"),
		marked("test-image-latest", criImages+"test-image-latest:latest"),
		marked("same-image", criImages+"test-image-tags:1", criImages+"test-image-tags:2", criImages+"test-image-tags:3"),
		marked("test", criImages+"test-image-tag:test"),
		marked("all", criImages+"test-image-tag:all"),
	}
	for i := range list {
		c := &list[i].config
		c.Env = append(c.Env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		if c.Cmd == nil && c.Entrypoint == nil {
			c.Cmd = []string{"sh"}
		}
	}
	return list
}

// pgrep stands in for procps' (critest runs `pgrep sleep`): the pids of
// the processes whose name matches the extended regexp $1; exit status 1
// when none does.
const pgrep = `#!/bin/sh
status=1
for d in /proc/[0-9]*; do
	{ read -r name < "$d/comm"; } 2>/dev/null || continue
	if echo "$name" | grep -qE -- "$1"; then
		echo "${d#/proc/}"
		status=0
	fi
done
exit $status
`

// busybox's /etc/passwd and /etc/group, as in the busybox image.
const (
	basePasswd = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbin:x:2:2:bin:/bin:/bin/false\n" +
		"sys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\nmail:x:8:8:mail:/var/spool/mail:/bin/false\n" +
		"www-data:x:33:33:www-data:/var/www:/bin/false\noperator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
	baseGroup = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nmail:x:8:\nkmem:x:9:\n" +
		"wheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\nfloppy:x:19:\nvideo:x:26:\naudio:x:29:\ntape:x:32:\nwww-data:x:33:\n" +
		"operator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\nlock:x:54:\nnetdev:x:82:\nusers:x:100:\nnogroup:x:65534:\n"
)

// tarEntry is one file, directory or symlink of a layer.
type tarEntry struct {
	name, link string
	hardlink   string // a path in the layer this is a hard link to
	data       []byte
	mode       int64
	uid, gid   int
	dir        bool
}

// layer makes a gzip layer of entries, each parent dir listed before.
func layer(entries []tarEntry) (registry.Layer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	seen := map[string]bool{}
	mtime := time.Unix(0, 0)
	for _, e := range entries {
		for _, d := range parents(e.name) {
			if !seen[d] {
				seen[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
					return registry.Layer{}, err
				}
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, Size: int64(len(e.data)), ModTime: mtime}
		switch {
		case e.dir:
			seen[e.name] = true
			h.Typeflag, h.Name, h.Size = tar.TypeDir, e.name+"/", 0
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode, h.Size = tar.TypeSymlink, e.link, 0o777, 0
		case e.hardlink != "":
			// An extractor may chmod the link, and so its target, to this.
			h.Typeflag, h.Linkname, h.Mode, h.Size = tar.TypeLink, e.hardlink, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return registry.Layer{}, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return registry.Layer{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return registry.Layer{}, err
	}
	// The fastest level: under -race default gzip takes five times as
	// long, tens of seconds for the webserver stand-ins on a loaded
	// machine, for a layer 10% smaller.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return registry.Layer{}, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return registry.Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return registry.Layer{}, err
	}
	return registry.Layer{Blob: registry.NewBlob(ocispec.MediaTypeImageLayerGzip, gz.Bytes()), DiffID: digest.FromBytes(raw.Bytes())}, nil
}

// parents lists name's parent directories, outermost first.
func parents(name string) []string {
	var out []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

// busyboxLayer is the base every stand-in shares: busybox-static with a
// hard link per applet in /bin (as the busybox image has: a spec masks
// /bin/ls, which must not mask the busybox a symlink would lead to), the
// busybox image's passwd and group, and the usual empty directories.
func busyboxLayer() (registry.Layer, error) {
	bb, err := os.ReadFile(registry.BusyboxPath)
	if err != nil {
		return registry.Layer{}, fmt.Errorf("read busybox (apt-get install busybox-static): %w", err)
	}
	out, err := exec.Command(registry.BusyboxPath, "--list").Output()
	if err != nil {
		return registry.Layer{}, fmt.Errorf("busybox --list: %w", err)
	}
	entries := []tarEntry{{name: "bin/busybox", data: bb, mode: 0o755}}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			entries = append(entries, tarEntry{name: "bin/" + applet, hardlink: "bin/busybox"})
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "root", "home", "var/www", "var/run", "usr/sbin", "usr/local/bin", "etc"} {
		entries = append(entries, tarEntry{name: d, dir: true})
	}
	entries = append(entries,
		tarEntry{name: "tmp", dir: true, mode: 0o1777},
		tarEntry{name: "etc/passwd", data: []byte(basePasswd), mode: 0o644},
		tarEntry{name: "etc/group", data: []byte(baseGroup), mode: 0o644},
	)
	return layer(entries)
}

// buildStandInBins builds the stand-in executables (./standin/..., and
// keel's own pause, the sandbox process keel-cri packages), static, into
// dir: name → contents.
func buildStandInBins(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	bins := map[string][]byte{}
	for name, pkg := range map[string]string{"webserver": "./standin/webserver", "nnp": "./standin/nnp", "ipcs": "./standin/ipcs", "pause": "../../cmd/keel-pause"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build stand-in %s: %v\n%s", name, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		bins[name] = b
	}
	return bins
}

// seedStandIns builds every stand-in and pushes it to reg under each of
// its references' repository paths, and returns the list.
//
// Every image is built before the first push, and only the pushes are
// bounded by pushTimeout: building is CPU work (gzip of the 8 MB
// webserver under -race takes tens of seconds on a loaded machine), which
// the test's own timeout bounds, and a deadline over both failed CI-like
// runs under KEEL_TEST_LOAD while every push took under a second.
func seedStandIns(t testing.TB, reg *registry.Registry) []standIn {
	t.Helper()
	base, err := busyboxLayer()
	if err != nil {
		t.Fatal(err)
	}
	shell, err := nonStandaloneShell(t)
	if err != nil {
		testkit.SkipOrFail(t, "busybox stand-in's shell: %v", err)
	}
	list := standIns(buildStandInBins(t, t.TempDir()), shell)
	images := make([]*registry.Image, len(list))
	for i, s := range list {
		layers := []registry.Layer{base}
		if len(s.files) > 0 {
			l, err := layer(s.files)
			if err != nil {
				t.Fatal(err)
			}
			layers = append(layers, l)
		}
		if images[i], err = registry.BuildImageFrom(layers, s.config, registry.ImageOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	for i, s := range list {
		for _, ref := range s.refs {
			repo, tag := repoPath(ref)
			if err := reg.PushImage(ctx, repo, tag, images[i]); err != nil {
				t.Fatalf("push the stand-in of %s: %v", ref, err)
			}
		}
	}
	return list
}

// pushTimeout bounds the pushes of every stand-in to the loopback
// registry (about 10 s in all on a loaded machine).
const pushTimeout = 2 * time.Minute

// repoPath splits a tagged reference into its path on the registry (the
// host dropped) and its tag.
func repoPath(ref string) (repo, tag string) {
	_, rest, _ := strings.Cut(ref, "/")
	i := strings.LastIndex(rest, ":")
	return rest[:i], rest[i+1:]
}
