package diff_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/difftest"
	"github.com/keel-runtime/keel/test/fstree"
)

// FuzzApplyContained applies layers onto base/a/b/root, where base also
// holds a victim file and dir, and checks that nothing outside the root
// changed and that every error is one Apply documents. The fuzzer's bytes
// either are a layer blob as they are (any compression, or garbage), or,
// more often, choose the entries of one or two layers (hostileLayer):
// names with `..` and absolute names, symlinks out of the root (relative,
// absolute, to the victim) and entries through them, hardlinks out,
// whiteouts and devices. test/difftest's FuzzApplyDifferential covers
// the layers builders make, against containerd's applier.
func FuzzApplyContained(f *testing.F) {
	testkit.RequireRoot(f, "set ownership and make devices")
	seeds := [][]byte{
		{0}, {1, 0, 5, 1, 3, 0}, {1, 1, 7, 2, 0, 0, 9, 0, 1, 1}, {1, 0, 3, 2, 4, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
		append([]byte{0}, gz([]byte("not a tar"))...),
		append([]byte{0}, bytes.Repeat([]byte{0}, 1024)...),
		append([]byte{0}, 0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// tmpfs: a fuzzed apply is a few small files, no need for a disk.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		f.Setenv("TMPDIR", "/dev/shm")
	}
	token := fmt.Sprintf("keel-fuzz-escape-%d", os.Getpid())
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "a", "b", "root")
		for _, d := range []string{root, filepath.Join(base, "victimdir")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{filepath.Join(base, "victim"), filepath.Join(base, "victimdir", "file"), filepath.Join(base, "a", "victim")} {
			if err := os.WriteFile(p, []byte("victim"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		before := outsideRoot(t, base)

		var blobs [][]byte
		src := difftest.Bytes(b)
		if src.IntN(4) == 0 {
			blobs = [][]byte{[]byte(src)}
		} else {
			for range 1 + src.IntN(2) {
				blobs = append(blobs, hostileLayer(t, &src, base, token))
			}
		}
		for _, blob := range blobs {
			_, err := diff.Apply(context.Background(), root, bytes.NewReader(blob))
			// ErrTooLarge is a limit refusing the layer (a zstd window
			// over the cap): a refusal, as classified as the others.
			if err != nil && !errdefs.IsInvalidArgument(err) && !errdefs.IsDataLoss(err) && !errdefs.IsNotImplemented(err) && !errors.Is(err, diff.ErrTooLarge) {
				t.Errorf("Apply: unclassified error: %v", err)
			}
			if d := fstree.Compare(before, outsideRoot(t, base), fstree.Options{}); len(d) > 0 {
				t.Fatalf("outside the root changed: %v", d)
			}
		}
		for _, p := range []string{"/" + token, "/tmp/" + token, "/etc/" + token, filepath.Join(base, token), filepath.Join(base, "a", token)} {
			if _, err := os.Lstat(p); err == nil {
				os.RemoveAll(p)
				t.Fatalf("%s was written", p)
			}
		}
	})
}

// outsideRoot lists base but for base/a/b/root and what is below it.
func outsideRoot(t *testing.T, base string) []fstree.Entry {
	t.Helper()
	all, err := fstree.Scan(base)
	if err != nil {
		t.Fatal(err)
	}
	var out []fstree.Entry
	for _, e := range all {
		if e.Path == "a/b/root" || strings.HasPrefix(e.Path, "a/b/root/") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// hostileLayer builds a plain tar of up to 12 entries chosen by src.
func hostileLayer(t *testing.T, src difftest.Source, base, token string) []byte {
	t.Helper()
	segments := []string{"a", "l", "d", "..", ".", "", token, "victim", "victimdir", "etc", "tmp", ".wh.a", ".wh.victim", ".wh..wh..opq", ".wh..."}
	name := func() string {
		parts := make([]string, 1+src.IntN(4))
		for i := range parts {
			parts[i] = segments[src.IntN(len(segments))]
		}
		return []string{"", "/", "./", "../"}[src.IntN(4)] + strings.Join(parts, "/")
	}
	symlinkTargets := []string{"/", "..", "../..", "../../..", base, filepath.Join(base, "victim"), filepath.Join(base, "victimdir"), "/tmp", "/etc", "a", "l", "a/../..", ".", "l/..", ""}
	hardlinkTargets := []string{filepath.Join(base, "victim"), "../../../victim", "../victim", "victim", "l/victim", "l/file"}
	// target is a generated name one time in n, else one of list.
	target := func(n int, list []string) string {
		if src.IntN(n) == 0 {
			return name()
		}
		return list[src.IntN(len(list))]
	}
	var ents difftest.Stack = [][]difftest.Entry{nil}
	for range 1 + src.IntN(12) {
		e := difftest.Entry{
			Name: name(),
			Mode: []int64{0o644, 0o755, 0o4755, 0o777, 0, 0o1777}[src.IntN(6)],
			UID:  []int{0, 1000, 65534}[src.IntN(3)],
		}
		e.GID = e.UID
		switch src.IntN(7) {
		case 0, 1:
			e.Type, e.Body = tar.TypeReg, strings.Repeat("x", src.IntN(5))
		case 2:
			e.Type = tar.TypeDir
		case 3:
			e.Type, e.Link = tar.TypeSymlink, target(4, symlinkTargets)
		case 4:
			e.Type, e.Link = tar.TypeLink, target(2, hardlinkTargets)
		case 5:
			e.Type, e.Major, e.Minor = tar.TypeChar, 1, 3
		case 6:
			e.Type = tar.TypeFifo
		}
		if e.Type != tar.TypeDir {
			// tar cannot write a trailing slash on anything else
			if e.Name = strings.TrimRight(e.Name, "/"); e.Name == "" {
				e.Name = "x"
			}
		}
		ents[0] = append(ents[0], e)
	}
	tars, err := ents.Tars()
	if err != nil {
		t.Fatal(err)
	}
	return tars[0]
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}
