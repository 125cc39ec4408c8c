package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestExportKeepsSpecialFiles is the regression test of `keel image export
// /dev/full REF`, which replaced the host's /dev/full by a regular file:
// export into a character device and a FIFO writes through them and leaves
// them what they were; a symlink stays a link; a failed export leaves an
// existing file as it was; a socket at keeld's grpc address is replaced but
// a regular file there is refused.
func TestExportKeepsSpecialFiles(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	img, err := registry.BuildImage(registry.ImageOptions{Extra: []byte("export\n")})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "example.com/export:v1"
	k.ok("image", "import", "--no-unpack", writeTemp(t, k.env.dir, "save.tar", dockerSave(t, img, ref)))
	dir := k.env.dir

	// A character device of our own (what /dev/null is), so the test
	// never writes into the host's /dev.
	dev := filepath.Join(dir, "null")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		testkit.SkipOrFail(t, "mknod needs CAP_MKNOD: %v", err)
	}
	k.ok("image", "export", dev, ref)
	if fi, err := os.Lstat(dev); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		t.Errorf("after export the device is %v (%v)", fi.Mode(), err)
	}

	// A FIFO with a reader: it gets the whole tar, the FIFO stays.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	k.ok("image", "export", fifo, ref)
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("after export the FIFO is %v (%v)", fi.Mode(), err)
	}
	viaFIFO := <-got
	if !hasIndex(viaFIFO) {
		t.Errorf("the FIFO's reader got %d bytes, not an OCI layout tar", len(viaFIFO))
	}

	// A symlink: its target is written, the link stays.
	target := filepath.Join(dir, "target.tar")
	link := filepath.Join(dir, "link.tar")
	if err := os.Symlink("target.tar", link); err != nil {
		t.Fatal(err)
	}
	k.ok("image", "export", link, ref)
	if dest, err := os.Readlink(link); err != nil || dest != "target.tar" {
		t.Errorf("after export the link is %q (%v)", dest, err)
	}
	viaLink, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(viaLink, viaFIFO) {
		t.Errorf("the link's target: %d bytes (%v), the FIFO's %d", len(viaLink), err, len(viaFIFO))
	}

	// A failed export (unknown image) leaves an existing file as it was.
	old := writeTemp(t, dir, "old.tar", []byte("old"))
	oneLineError(t, k.keel("image", "export", old, "example.com/missing:v1"))
	if b, err := os.ReadFile(old); err != nil || string(b) != "old" {
		t.Errorf("after a failed export the file holds %q (%v)", b, err)
	}
	if line := oneLineError(t, k.keel("image", "export", dir, ref)); !strings.Contains(line, "is a directory") {
		t.Errorf("export to a directory: %s", line)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	// keeld replaces a stale socket at its address, never a file.
	e := newEnv(t)
	if err := os.MkdirAll(filepath.Dir(e.socket), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTemp(t, filepath.Dir(e.socket), filepath.Base(e.socket), []byte("not a socket"))
	d := e.spawn(t, e.config(t, defaultPlugins))
	<-d.done
	if d.waitErr == nil {
		t.Fatal("keeld served on a regular file's path")
	}
	if b, err := os.ReadFile(e.socket); err != nil || string(b) != "not a socket" {
		t.Errorf("keeld touched the file at its address: %q, %v", b, err)
	}
	if log, _ := os.ReadFile(d.log); !strings.Contains(string(log), "not a socket") {
		t.Errorf("keeld's refusal does not say why:\n%s", log)
	}
}

func writeTemp(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hasIndex tells whether b is a tar holding an OCI layout's index.json.
func hasIndex(b []byte) bool {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if h.Name == "index.json" {
			return true
		}
	}
}

// TestRefusedAtOnce: input that can never work is refused at once with a
// message about what is wrong, not after retries or a timeout, and not in
// terms of something made from it: an invalid reference (foo_bar.com has
// '_', so the grammar reads it as a path with no registry), an empty or
// invalid container id. (A socket this user may not open:
// TestCLIFailsFast/Forbidden.) Each deadline is
// what the same CLI takes for `keel version` plus a margin, so that it
// holds on a loaded machine.
func TestRefusedAtOnce(t *testing.T) {
	t.Parallel()
	block, err := resolverPlugin(nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	k := e.startWith(t, e.config(t, defaultPlugins+block))
	img, err := registry.BuildImage(registry.ImageOptions{Extra: []byte("refused\n")})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "example.com/refused:v1"
	k.ok("image", "import", "--no-unpack", writeTemp(t, e.dir, "save.tar", dockerSave(t, img, ref)))

	start := time.Now()
	k.ok("version")
	limit := time.Since(start) + time.Second

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"image", "pull", "foo_bar.com/x"}, "invalid reference"},
		{[]string{"image", "pull", "example.com/UPPER"}, "invalid reference"},
		{[]string{"image", "resolve", "foo_bar.com/x"}, "invalid reference"},
		{[]string{"run", ref, ""}, "container id is empty"},
		{[]string{"container", "create", ref, "a--b"}, `container id "a--b"`},
	} {
		start := time.Now()
		line := oneLineError(t, k.keel(tt.args...))
		if took := time.Since(start); took > limit {
			t.Errorf("keel %q took %s to fail (keel version: %s)", tt.args, took, limit-time.Second)
		}
		if !strings.Contains(line, tt.want) || strings.Contains(line, "snapshot") {
			t.Errorf("keel %q: %s, want %q", tt.args, line, tt.want)
		}
	}

}
