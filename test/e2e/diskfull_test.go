package e2e

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// enospc is how an error caused by a full disk must read.
const enospc = "no space left on device"

// diskSize is the loopback filesystem keeld's root and state live on.
const diskSize = 128 << 20

// TestDiskFull: keeld's root and state on a small ext4 that fills up
// during an ingest (a layer bigger than the disk), an unpack (a small
// layer that decompresses to more than the disk) and metadata writes (the
// disk filled by another file). Each fails with an error that says
// "no space left on device", `keel check` is clean after it, and the
// space comes back once gc has collected what the failure left.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	testkit.RequireRoot(t, "mount a loopback ext4")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testkit.SkipOrFail(t, "mkfs.ext4 (e2fsprogs): %v", err)
	}
	l, err := fixture.NewLoopback(t.TempDir(), diskSize, "ext4", []string{"-q", "-F", "-m", "0"}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("tear down the loopback ext4: %v", err)
		}
	})

	reg := startRegistry(t)
	// ingest: one incompressible layer larger than the disk.
	huge, hugeDiff := layerOf(t, tarEntry{name: "huge", typ: tar.TypeReg, data: randomBytes(t, diskSize+16<<20)})
	pushLayers(t, reg, "e2e/huge", []registry.Blob{huge}, []digest.Digest{hugeDiff})
	// unpack: a layer of a few MB that unpacks to twice the disk. A 4 KiB
	// random block repeated compresses well and is no sparse file.
	bomb, bombDiff := layerOf(t, tarEntry{name: "bomb", typ: tar.TypeReg, data: bytes.Repeat(randomBytes(t, 4096), 2*diskSize/4096)})
	pushLayers(t, reg, "e2e/bomb", []registry.Blob{bomb}, []digest.Digest{bombDiff})

	block, err := resolverPlugin([]byte(plainHTTP(reg.Host)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.root, e.state = filepath.Join(l.Dir, "root"), filepath.Join(l.Dir, "state")
	k := e.startWith(t, e.config(t, pullPlugins+block))
	// The metadata database keeps the pages it grew to: what it uses is
	// not counted.
	db := filepath.Join(e.root, "meta.db")
	usedOutsideDB := func(t *testing.T) int64 {
		st, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		return used(t, l.Dir) - st.Size()
	}
	empty := usedOutsideDB(t)
	t.Logf("%s: %d KiB used with keeld started, meta.db aside", l.Dir, empty>>10)

	// full fails the test unless r failed for lack of space.
	full := func(t *testing.T, what string, r result) {
		t.Helper()
		t.Logf("%s: exit %d: %s", what, r.code, firstLine(r.stderr))
		if r.code == 0 {
			t.Errorf("%s on a full disk succeeded", what)
		} else if !strings.Contains(r.stderr, enospc) || !strings.Contains(r.stderr, "resource exhausted") {
			t.Errorf("%s on a full disk: want a resource exhausted error naming %q; %v", what, enospc, r)
		}
	}
	// spaceBack collects and checks that the disk is as empty as before.
	spaceBack := func(t *testing.T, what string) {
		t.Helper()
		k := k.with(t)
		k.checkAfterCrash(t, "", "after "+what)
		k.ok("gc", "--ingests")
		if after := usedOutsideDB(t); after > empty+1<<20 {
			t.Errorf("after %s and gc: %d KiB used, %d KiB before; what holds it:\n%s", what, after>>10, empty>>10, spaceHolders(l.Dir))
		}
		k.cleanOrRepaired(t, "after "+what+" and gc")
	}

	t.Run("ingest", func(t *testing.T) {
		k := k.with(t)
		full(t, "pull of a layer larger than the disk", k.keel("image", "pull", "-q", reg.Host+"/e2e/huge:v1"))
		spaceBack(t, "the failed ingest")
	})

	t.Run("unpack", func(t *testing.T) {
		k := k.with(t)
		ref := reg.Host + "/e2e/bomb:v1"
		r := runKeelWithin(t, e.socket, nil, settle*2, "image", "pull", "-q", ref)
		full(t, "pull of a layer that unpacks to more than the disk", r)
		k.keel("image", "rm", ref) // if the record was made
		spaceBack(t, "the failed unpack")
	})

	t.Run("metadata", func(t *testing.T) {
		k := k.with(t)
		// What the ops below need to exist first.
		small := []byte("small")
		k.keelIn(bytes.NewReader(small), "content", "ingest", "small")
		k.ok("snapshot", "prepare", "base-active")
		k.ok("snapshot", "commit", "base", "base-active")

		filler := fill(t, l.Dir)
		ops := [][]string{
			{"lease", "create", "--id", "full"},
			{"content", "label", digest.FromBytes(small).String(), "a=b"},
			{"snapshot", "prepare", "on-full", "base"},
			{"snapshot", "label", "base", "a=b"},
			{"namespace", "create", "full"},
		}
		failed := 0
		for _, args := range ops {
			r := k.keel(args...)
			if r.code == 0 {
				continue // it fitted in pages the database had already
			}
			failed++
			t.Logf("%s on a full disk: %s", strings.Join(args, " "), firstLine(r.stderr))
			if !strings.Contains(r.stderr, enospc) {
				t.Errorf("%s on a full disk: want an error naming %q; %v", strings.Join(args, " "), enospc, r)
			}
		}
		// Leases with 96 KB of labels (4 KB each, the most a label may
		// hold) until the database must grow.
		grow := func(id string) []string {
			args := []string{"lease", "create", "--id", id}
			for i := range 24 {
				args = append(args, "--label", fmt.Sprintf("l%d=%s", i, strings.Repeat("x", 4000)))
			}
			return args
		}
		grew := 0
		for ; grew < 64; grew++ {
			r := k.keel(grow(fmt.Sprintf("grow-%d", grew))...)
			if r.code != 0 {
				t.Logf("lease %d of 96 KB labels on a full disk: %s", grew, firstLine(r.stderr))
				if !strings.Contains(r.stderr, enospc) {
					t.Errorf("metadata write on a full disk: want an error naming %q; got %s", enospc, r.stderr)
				}
				break
			}
		}
		if grew == 64 {
			t.Errorf("64 leases of 96 KB labels fitted on a full disk")
		}
		ingest := k.keelIn(bytes.NewReader(randomBytes(t, 1<<20)), "content", "ingest", "on-full")
		full(t, "ingest of 1 MiB", ingest)
		t.Logf("%d of %d metadata writes failed on the full disk", failed, len(ops))
		k.checkAfterCrash(t, "", "with the disk full")

		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		// With room again, every write works.
		for _, args := range ops {
			if r := k.keel(args...); r.code != 0 && !strings.Contains(r.stderr, "already exists") {
				t.Errorf("after the disk was freed: %v", r)
			}
		}
		if r := k.keelIn(bytes.NewReader(small), "content", "ingest", "on-full-again"); r.code != 0 {
			t.Errorf("ingest after the disk was freed: %v", r)
		}
		for i := range grew + 1 {
			if r := k.keel(grow(fmt.Sprintf("grow-again-%d", i))...); r.code != 0 {
				t.Fatalf("lease of 96 KB labels after the disk was freed: %s", r.stderr)
			}
		}
		k.ok("snapshot", "rm", "on-full")
		k.ok("lease", "rm", "full")
		for i := range grew + 1 {
			if i < grew {
				k.ok("lease", "rm", fmt.Sprintf("grow-%d", i))
			}
			k.ok("lease", "rm", fmt.Sprintf("grow-again-%d", i))
		}
		spaceBack(t, "the full metadata writes")
	})
}

// used is how many bytes of the filesystem at dir are in use (df's Used).
func used(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// fill writes a file under dir until the filesystem is full and returns
// its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1 << 20, 4096, 512} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	return path
}

// spaceHolders lists what may hold dir's space: files of 1 MiB or more
// under it, and files under it (deleted ones too) that processes hold
// open.
func spaceHolders(dir string) string {
	var b strings.Builder
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Size() >= 1<<20 {
			fmt.Fprintf(&b, "file %s: %d KiB\n", path, info.Size()>>10)
		}
		return nil
	})
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(target, dir) {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		cmd, _ := os.ReadFile("/proc/" + pid + "/comm")
		fmt.Fprintf(&b, "open by %s (%s): %s\n", pid, strings.TrimSpace(string(cmd)), target)
	}
	return b.String()
}
