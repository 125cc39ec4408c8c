package difftest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/fstree"
)

// outcome is what applying a stack with both appliers gave.
type outcome struct {
	refErr, keelErr error
	diffs           []fstree.Difference // containerd's tree is a, keel's b
}

func (o outcome) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "containerd: %v\nkeel: %v\n", o.refErr, o.keelErr)
	for _, d := range o.diffs {
		fmt.Fprintf(&b, "\t%s\n", d)
	}
	return b.String()
}

// applyBoth applies the stack with containerd's applier and keel's, each
// into its own dir, and compares the trees. Every other layer is gzipped,
// so both readers are exercised.
func applyBoth(t testing.TB, s Stack) outcome {
	t.Helper()
	tars, err := s.Tars()
	if err != nil {
		t.Fatal(err)
	}
	readers := func() []io.Reader {
		var rs []io.Reader
		for i, b := range tars {
			if i%2 == 1 {
				b = gzipped(t, b)
			}
			rs = append(rs, bytes.NewReader(b))
		}
		return rs
	}
	tmp := t.TempDir()
	ref, keel := filepath.Join(tmp, "containerd"), filepath.Join(tmp, "keel")
	for _, d := range []string{ref, keel} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Now().Add(-time.Second) // file systems' clocks are coarse
	var o outcome
	o.refErr = ApplyReference(context.Background(), ref, readers()...)
	o.keelErr = ApplyKeel(context.Background(), keel, readers()...)
	if o.refErr == nil && o.keelErr == nil {
		if o.diffs, err = fstree.CompareDirs(ref, keel, fstree.Options{Since: since}); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkSame fails t unless both appliers succeeded and agree.
func checkSame(t testing.TB, s Stack) {
	t.Helper()
	if o := applyBoth(t, s); o.refErr != nil || o.keelErr != nil || len(o.diffs) > 0 {
		t.Fatalf("the appliers differ:\n%s\non:\n%s", o, s)
	}
}

// Entry makers for hand-written stacks.
var mt = time.Date(2021, 2, 3, 4, 5, 6, 7000, time.UTC)

func d(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755, ModTime: mt} }
func f(name, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Body: body, ModTime: mt}
}
func wh(name string) Entry { return Entry{Name: name, Type: tar.TypeReg, ModTime: mt} }
func sl(name, to string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Link: to, ModTime: mt}
}
func hl(name, to string) Entry { return Entry{Name: name, Type: tar.TypeLink, Link: to, ModTime: mt} }
func with(e Entry, change func(*Entry)) Entry {
	change(&e)
	return e
}

// TestHandWritten applies stacks written for one case each; the appliers
// must agree on all of them.
func TestHandWritten(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	for _, tc := range []struct {
		name  string
		stack Stack
	}{
		{"whiteout of a nested dir (issue 9, 1.1)", Stack{
			{d("usr/"), d("usr/share/"), d("usr/share/info/"), f("usr/share/info/dir", "x"), d("usr/share/info/sub/"), f("usr/share/info/sub/f", "y"), f("usr/share/doc", "z")},
			{d("usr/"), d("usr/share/"), wh("usr/share/.wh.info")},
		}},
		{"whiteout of a cached dir, then the dir again", Stack{
			{f("a/b/c/old", "old")},
			{f("a/b/c/x", "x"), wh("a/b/.wh.c"), f("a/b/c/y", "y")},
		}},
		{"whiteout in a dir that is not there", Stack{
			{f("a/f", "f")},
			{wh("x/y/.wh.z")},
		}},
		{"opaque dir under nested parents", Stack{
			{f("usr/share/info/a", "a"), f("usr/share/info/b/c", "c"), f("usr/share/info/keep/old", "old")},
			{d("usr/"), d("usr/share/"), d("usr/share/info/"), d("usr/share/info/keep/"), f("usr/share/info/keep/mine", "mine"), wh("usr/share/info/.wh..wh..opq"), f("usr/share/info/new", "new")},
		}},
		{"opaque root", Stack{
			{f("a/b", "b"), f("c", "c")},
			{f("d", "d"), wh(".wh..wh..opq"), f("e", "e")},
		}},
		{"dir replaced by a file at depth and back", Stack{
			{f("a/b/c/d/e", "e")},
			{f("a/b/c", "now a file")},
			{d("a/b/c/"), f("a/b/c/z", "z")},
		}},
		{"file replaced by a symlink, a symlink by a dir", Stack{
			{f("a/b/c", "c"), sl("a/b/l", "c")},
			{sl("a/b/c", "l"), d("a/b/l/"), f("a/b/l/x", "x")},
		}},
		{"hardlinks to lower files, then the target deleted", Stack{
			{f("bin/t", "target"), hl("bin/u", "bin/t")},
			{hl("usr/bin/l", "bin/t"), hl("sbin/l2", "bin/u")},
			{wh("bin/.wh.t")},
		}},
		{"hardlink to a symlink", Stack{
			{sl("s", "nowhere"), hl("h", "s")},
		}},
		{"hardlink replaces a dir holding cached parents", Stack{
			{f("a/b/d/x/y", "y"), f("a/t", "t")},
			{f("a/b/d/x/z", "z"), hl("a/b/d", "a/t"), f("a/b/n", "n")},
		}},
		{"special bits, owners, devices", Stack{
			{
				with(d("tmp/"), func(e *Entry) { e.Mode = 0o1777 }),
				with(d("g/"), func(e *Entry) { e.Mode = 0o2775; e.GID = 50 }),
				with(f("bin/su", "su"), func(e *Entry) { e.Mode = 0o4755 }),
				with(f("bin/wall", "w"), func(e *Entry) { e.Mode = 0o2755; e.GID = 5 }),
				{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3, ModTime: mt},
				{Name: "dev/sda", Type: tar.TypeBlock, Mode: 0o660, Major: 8, Minor: 0, GID: 6, ModTime: mt},
				{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o620, ModTime: mt},
			},
			{with(f("bin/su", "su2"), func(e *Entry) { e.Mode = 0o755; e.UID = 1000 }), with(d("tmp/"), func(e *Entry) { e.Mode = 0o755 })},
		}},
		{"the same dir twice in a layer: the last entry wins", Stack{
			{d("a/"), f("a/x", "x"), with(d("a/"), func(e *Entry) { e.Mode = 0o700; e.ModTime = mt.Add(time.Hour) })},
		}},
		{"the root's own entry is left alone", Stack{
			{with(d("./"), func(e *Entry) { e.Mode = 0o700; e.UID = 5 }), f("a", "a")},
		}},
		{"xattrs: user, security.capability, trusted (not set by either), user on a symlink (ignored)", Stack{
			{
				with(f("a", "a"), func(e *Entry) { e.Xattrs = map[string]string{"user.k": "v", "security.capability": capability()} }),
				with(d("d/"), func(e *Entry) { e.Xattrs = map[string]string{"user.k": "", "trusted.k": "t"} }),
				with(sl("l", "a"), func(e *Entry) { e.Xattrs = map[string]string{"user.k": "v"} }),
				with(Entry{Name: "p", Type: tar.TypeFifo, Mode: 0o600, ModTime: mt}, func(e *Entry) { e.Xattrs = map[string]string{"user.k": "v"} }),
			},
		}},
		{"entries below a relative symlink inside the root", Stack{
			{d("usr/"), d("usr/lib/"), sl("lib", "usr/lib")},
			{f("lib/x", "x"), d("lib/d/"), f("lib/d/y", "y")},
		}},
		{"rename: a whiteout and the entry elsewhere", Stack{
			{f("etc/old", "conf"), d("var/"), d("var/lib/"), f("var/lib/x", "x")},
			{wh("etc/.wh.old"), f("etc/new", "conf"), wh("var/.wh.lib"), d("srv/"), d("srv/lib/"), f("srv/lib/x", "x")},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkSame(t, tc.stack) })
	}
}

// knownDifferences are the stacks on which keel and containerd differ on
// purpose. Each says why and pins exactly how they differ, so a change to
// either applier shows here.
var knownDifferences = []struct {
	name, why string
	stack     Stack
	keelErr   string              // keel refuses the stack with this in its error
	diffs     []fstree.Difference // or the trees differ so (containerd a, keel b)
}{{
	name: "entry below an absolute symlink",
	why: "containerd resolves a parent's symlinks as if the root were / (l -> /usr " +
		"puts l/x at usr/x); keel resolves beneath the root and refuses a symlink " +
		"that leads out, absolute ones included: builders never put entries below " +
		"a symlink, and one that does is crafted (core/diff's package doc)",
	stack:   Stack{{d("usr/"), sl("l", "/usr")}, {f("l/x", "x")}},
	keelErr: `layer entry "l/x": parent "l" leads out of the root through a symlink`,
}, {
	name: "opaque dir with this layer's entries below an implicit parent",
	why: "OCI: an opaque dir hides the lower layers' entries only. containerd " +
		"keeps just the names the layer has entries for, so it removes o/keep " +
		"(no entry of its own) with o/keep/mine, which the layer wrote; keel keeps " +
		"the dirs on the way to what the layer wrote. Builders list every parent, " +
		"so real layers never meet this",
	stack: Stack{
		{f("o/keep/old", "old"), f("o/gone", "g")},
		{f("o/keep/mine", "mine"), wh("o/.wh..wh..opq")},
	},
	diffs: []fstree.Difference{
		{Path: "o/keep", Field: "entry", A: "absent", B: "dir"},
		{Path: "o/keep/mine", Field: "entry", A: "absent", B: "file"},
	},
}}

func TestKnownDifferences(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	for _, kd := range knownDifferences {
		t.Run(kd.name, func(t *testing.T) {
			o := applyBoth(t, kd.stack)
			if o.refErr != nil {
				t.Fatalf("containerd: %v", o.refErr)
			}
			if kd.keelErr != "" {
				if o.keelErr == nil || !strings.Contains(o.keelErr.Error(), kd.keelErr) {
					t.Fatalf("keel: %v, want an error with %q", o.keelErr, kd.keelErr)
				}
				return
			}
			if o.keelErr != nil {
				t.Fatalf("keel: %v", o.keelErr)
			}
			if !slices.Equal(o.diffs, kd.diffs) {
				t.Fatalf("differences:\n%s\nwant:\n%v", o, kd.diffs)
			}
		})
	}
}

// generatedSeeds is how many generated stacks TestGenerated applies: 100
// (6 s of CPU), 20 with -short, KEEL_DIFFTEST_SEEDS for a longer run.
func generatedSeeds() int {
	if v := os.Getenv("KEEL_DIFFTEST_SEEDS"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		return n
	}
	if testing.Short() {
		return 20
	}
	return 100
}

// TestGenerated applies many seeded random stacks (see Generate); the
// appliers must agree on each. A failure names the seed and lists the
// stack.
func TestGenerated(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	for seed := range uint64(generatedSeeds()) {
		s := Generate(rand.New(rand.NewPCG(seed, 0x6b65656c)), GenOptions{})
		if o := applyBoth(t, s); o.refErr != nil || o.keelErr != nil || len(o.diffs) > 0 {
			t.Errorf("seed %d: the appliers differ:\n%s\non:\n%s", seed, o, s)
		}
	}
}

// TestGeneratedOverlay applies generated stacks with keel through overlay
// mounts, as on keel's overlay snapshotter (see ApplyKeelOverlay), and
// compares the view with containerd's plain dir.
func TestGeneratedOverlay(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	for seed := range uint64(generatedSeeds() / 4) {
		s := Generate(rand.New(rand.NewPCG(seed, 0x6b65656c)), GenOptions{SameLayerHardlinks: true})
		if diffs := applyOverlay(t, s); len(diffs) > 0 {
			t.Errorf("seed %d: keel on overlay differs:\n%s\non:\n%s", seed, outcome{diffs: diffs}, s)
		}
	}
}

// TestKnownOverlayDifferences pins how keel on overlayfs differs from
// containerd's applier on a plain dir: overlayfs (index=off, as keel's and
// containerd's overlay snapshotters mount it) copies up only the name a
// layer links to, so a lower file's other names keep the old inode and
// metadata. Builders' layers never link to a lower layer's file (the
// target is copied up into the layer with the link); containerd's own
// overlay applier refuses such a layer (the target is not in the upper
// dir).
func TestKnownOverlayDifferences(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	s := Stack{
		{f("a", "a"), with(hl("b", "a"), func(e *Entry) { e.Mode = 0o644 })},
		{with(hl("c", "a"), func(e *Entry) { e.Mode = 0o600; e.UID = 7 })},
	}
	got := applyOverlay(t, s)
	want := []fstree.Difference{
		{Path: "a", Field: "hardlinks", A: "a,b,c", B: "a,c"},
		{Path: "b", Field: "mode", A: "0600", B: "0644"},
		{Path: "b", Field: "owner", A: "7:0", B: "0:0"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("differences:\n%s\nwant:\n%v", outcome{diffs: got}, want)
	}
}

// applyOverlay applies the stack with containerd's applier onto a plain dir
// and with keel's through overlay mounts, and compares the two.
func applyOverlay(t *testing.T, s Stack) []fstree.Difference {
	t.Helper()
	tars, err := s.Tars()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	ref, work := filepath.Join(tmp, "containerd"), filepath.Join(tmp, "keel")
	for _, d := range []string{ref, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	since := time.Now().Add(-time.Second)
	if err := ApplyReference(context.Background(), ref, readers(tars)...); err != nil {
		t.Fatalf("%v\non:\n%s", err, s)
	}
	view, unmount, err := ApplyKeelOverlay(context.Background(), work, readers(tars)...)
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) && (errno == unix.ENODEV || errno == unix.EPERM) {
			testkit.SkipOrFail(t, "no overlay mount here: %v", err)
		}
		t.Fatalf("%v\non:\n%s", err, s)
	}
	diffs, err := fstree.CompareDirs(ref, view, fstree.Options{Since: since})
	if uerr := unmount(); uerr != nil {
		t.Errorf("unmount: %v", uerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return diffs
}

func readers(tars [][]byte) []io.Reader {
	var rs []io.Reader
	for _, b := range tars {
		rs = append(rs, bytes.NewReader(b))
	}
	return rs
}

// FuzzApplyDifferential generates a stack from the fuzzer's bytes (each
// byte a choice, see Bytes) and applies it with both appliers.
func FuzzApplyDifferential(f *testing.F) {
	testkit.RequireRoot(f, "set ownership and make devices")
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 1))
		b := make([]byte, 64+r.IntN(512))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		src := Bytes(b)
		checkSame(t, Generate(&src, GenOptions{}))
	})
}
