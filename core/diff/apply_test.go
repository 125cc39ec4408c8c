package diff

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// capability is a valid security.capability value (v2, effective,
// CAP_NET_BIND_SERVICE permitted).
func capability() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

// kindsLayer has every entry kind Apply makes.
func kindsLayer(t testing.TB) []byte {
	mt := time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)
	at := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	return layer(t,
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o2750, uid: 1000, gid: 1001, mtime: mt},
		ent{name: "etc/conf", typ: tar.TypeReg, mode: 0o640, body: "hello", uid: 1000, gid: 1001, mtime: mt, atime: at,
			xattrs: map[string]string{"user.keel": "v1"}},
		ent{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/true\n", mtime: mt},
		ent{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, body: "ping", uid: 5, gid: 6,
			xattrs: map[string]string{"security.capability": capability()}},
		ent{name: "bin/big", typ: tar.TypeReg, mode: 0o600, body: string(bytes.Repeat([]byte("0123456789abcdef"), 64<<10))},
		ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777, mtime: mt},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib", uid: 7, gid: 8, mtime: mt},
		// a hardlink's header sets the inode's metadata (as containerd does);
		// tar writers copy it from the inode
		ent{name: "bin/sudo", typ: tar.TypeLink, link: "bin/su", mode: 0o4755, mtime: mt},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3, mtime: mt},
		ent{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 0, gid: 6},
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o620},
		ent{name: "etc/empty", typ: tar.TypeReg, mode: 0o400},
	)
}

func TestApplyKinds(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	plain := kindsLayer(t)
	for _, tc := range []struct {
		name    string
		workers int
	}{{"inline", 0}, {"workers", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			res, err := Apply(context.Background(), root, bytes.NewReader(plain), WithWorkers(tc.workers))
			if err != nil {
				t.Fatal(err)
			}
			if res.DiffID.String() != sha(plain) || res.Size != int64(len(plain)) || res.CompressedSize != int64(len(plain)) {
				t.Errorf("result %+v, want diff id %s size %d", res, sha(plain), len(plain))
			}
			if res.Files != 5 || res.Dirs != 2 || res.Symlinks != 1 || res.Hardlinks != 1 || res.Specials != 3 || res.Entries != 12 {
				t.Errorf("counts %+v", res)
			}
			checkKinds(t, root)
		})
	}
}

func checkKinds(t *testing.T, root string) {
	t.Helper()
	mt := time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)
	st := func(name string) unix.Stat_t {
		t.Helper()
		var s unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, name), &s); err != nil {
			t.Fatalf("lstat %s: %v", name, err)
		}
		return s
	}
	for _, c := range []struct {
		name     string
		mode     uint32 // S_IFMT and permission bits
		uid, gid uint32
		rdev     uint64
		mtime    *time.Time
	}{
		{"etc", unix.S_IFDIR | 0o2750, 1000, 1001, 0, &mt},
		{"etc/conf", unix.S_IFREG | 0o640, 1000, 1001, 0, &mt},
		{"bin", unix.S_IFDIR | 0o755, 0, 0, 0, nil},
		{"bin/su", unix.S_IFREG | 0o4755, 0, 0, 0, &mt},
		{"bin/ping", unix.S_IFREG | 0o755, 5, 6, 0, nil},
		{"bin/big", unix.S_IFREG | 0o600, 0, 0, 0, nil},
		{"tmp", unix.S_IFDIR | 0o1777, 0, 0, 0, &mt},
		{"lib", unix.S_IFLNK | 0o777, 7, 8, 0, &mt},
		{"dev/null", unix.S_IFCHR | 0o666, 0, 0, unix.Mkdev(1, 3), &mt},
		{"dev/loop0", unix.S_IFBLK | 0o660, 0, 6, unix.Mkdev(7, 0), nil},
		{"run/fifo", unix.S_IFIFO | 0o620, 0, 0, 0, nil},
		{"etc/empty", unix.S_IFREG | 0o400, 0, 0, 0, nil},
	} {
		s := st(c.name)
		if s.Mode != c.mode || s.Uid != c.uid || s.Gid != c.gid || s.Rdev != c.rdev {
			t.Errorf("%s: mode %o uid %d gid %d rdev %x, want %o %d %d %x", c.name, s.Mode, s.Uid, s.Gid, s.Rdev, c.mode, c.uid, c.gid, c.rdev)
		}
		if c.mtime != nil && time.Unix(s.Mtim.Unix()).UTC() != *c.mtime {
			t.Errorf("%s: mtime %v, want %v", c.name, time.Unix(s.Mtim.Unix()).UTC(), *c.mtime)
		}
	}
	if s := st("etc/conf"); time.Unix(s.Atim.Unix()).UTC() != time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC) {
		t.Errorf("etc/conf atime %v", time.Unix(s.Atim.Unix()))
	}
	if a, b := st("bin/su"), st("bin/sudo"); a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("bin/sudo is not a hardlink of bin/su: inodes %d %d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	if l, err := os.Readlink(filepath.Join(root, "lib")); err != nil || l != "usr/lib" {
		t.Errorf("lib -> %q, %v", l, err)
	}
	for name, want := range map[string]string{"etc/conf": "hello", "bin/big": string(bytes.Repeat([]byte("0123456789abcdef"), 64<<10))} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != want {
			t.Errorf("%s: contents differ (%d bytes), %v", name, len(b), err)
		}
	}
	for name, x := range map[string][2]string{"etc/conf": {"user.keel", "v1"}, "bin/ping": {"security.capability", capability()}} {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(root, name), x[0], buf)
		if err != nil || string(buf[:n]) != x[1] {
			t.Errorf("%s: xattr %s = %q, %v", name, x[0], buf[:max(n, 0)], err)
		}
	}
}

func TestApplyCompressions(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	plain := kindsLayer(t)
	blobs := map[Compression][]byte{Uncompressed: plain, Gzip: gzipped(t, plain), Zstd: zstded(t, plain)}
	media := map[Compression]string{
		Uncompressed: "application/vnd.oci.image.layer.v1.tar",
		Gzip:         "application/vnd.docker.image.rootfs.diff.tar.gzip",
		Zstd:         "application/vnd.oci.image.layer.v1.tar+zstd",
	}
	for comp, blob := range blobs {
		for _, how := range []string{"detect", "media type"} {
			t.Run(comp.String()+"/"+how, func(t *testing.T) {
				root := t.TempDir()
				opts := []ApplyOpt{WithExpectedDiffID(digest.Digest(sha(plain)))}
				if how == "media type" {
					opts = append(opts, WithMediaType(media[comp]))
				}
				res, err := Apply(context.Background(), root, bytes.NewReader(blob), opts...)
				if err != nil {
					t.Fatal(err)
				}
				if res.Compression != comp || res.CompressedSize != int64(len(blob)) || res.Size != int64(len(plain)) {
					t.Errorf("result %+v, want %s, %d bytes read, %d uncompressed", res, comp, len(blob), len(plain))
				}
				checkKinds(t, root)
			})
		}
	}
}

func TestApplyReplaces(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	root := t.TempDir()
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "f"), []byte("keep"), 0o644)
	first := layer(t,
		file("a", "file"), dir("b/"), file("b/x", "x"), symlink("c", filepath.Join(outside, "f")),
		dir("d/"), symlink("e", outside),
	)
	second := layer(t,
		dir("a/"), file("a/y", "y"), // file replaced by a dir
		file("b", "now a file"),                                // dir (not empty) replaced by a file
		file("c", "not a link"),                                // symlink out replaced by a file: the link's target untouched
		ent{name: "d/", typ: tar.TypeDir, mode: 0o700, uid: 3}, // dir kept, metadata set
		dir("e/"),                 // symlink replaced by a dir
		file("deep/er/file", "p"), // parents made
	)
	for _, l := range [][]byte{first, second} {
		if _, err := Apply(context.Background(), root, bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	got := tree(t, root)
	want := "" +
		" drwxr-xr-x\n" +
		"/a drwxr-xr-x\n" +
		"/a/y -rw-r--r-- y\n" +
		"/b -rw-r--r-- now a file\n" +
		"/c -rw-r--r-- not a link\n" +
		"/d drwx------\n" +
		"/deep drwxr-xr-x\n" +
		"/deep/er drwxr-xr-x\n" +
		"/deep/er/file -rw-r--r-- p\n" +
		"/e drwxr-xr-x\n"
	if got != want {
		t.Errorf("tree:\n%s\nwant:\n%s", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "f")); string(b) != "keep" {
		t.Errorf("file outside changed: %q", b)
	}
	var s unix.Stat_t
	if unix.Lstat(filepath.Join(root, "d"), &s); s.Uid != 3 {
		t.Errorf("kept dir d: uid %d, want 3", s.Uid)
	}
}

func TestApplyErrors(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	plain := layer(t, file("a", "aaaa"), dir("d/"), file("d/b", string(bytes.Repeat([]byte("b"), 100<<10))))
	gz, zs := gzipped(t, plain), zstded(t, plain)
	readFail := errors.New("connection reset")
	for _, tc := range []struct {
		name string
		r    io.Reader
		opts []ApplyOpt
		is   func(error) bool
	}{
		{"diff id mismatch", bytes.NewReader(plain), []ApplyOpt{WithExpectedDiffID(digest.FromString("other"))}, errdefs.IsFailedPrecondition},
		{"truncated gzip", bytes.NewReader(gz[:len(gz)/2]), nil, errdefs.IsDataLoss},
		{"gzip without trailer", bytes.NewReader(gz[:len(gz)-4]), nil, errdefs.IsDataLoss},
		{"corrupt gzip", bytes.NewReader(append(append([]byte{}, gz[:20]...), bytes.Repeat([]byte{0xff}, 200)...)), nil, errdefs.IsDataLoss},
		{"truncated zstd", bytes.NewReader(zs[:len(zs)/2]), nil, errdefs.IsDataLoss},
		{"truncated tar", bytes.NewReader(plain[:len(plain)/2]), nil, errdefs.IsDataLoss},
		{"gzip said, plain given", bytes.NewReader(plain), []ApplyOpt{WithMediaType("application/vnd.oci.image.layer.v1.tar+gzip")}, errdefs.IsDataLoss},
		{"unknown media type", bytes.NewReader(plain), []ApplyOpt{WithMediaType("text/plain")}, errdefs.IsInvalidArgument},
		{"xz", bytes.NewReader([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}), nil, errdefs.IsNotImplemented},
		{"reader fails", io.MultiReader(bytes.NewReader(gz[:100]), &failReader{readFail}), nil, func(err error) bool { return errors.Is(err, readFail) && !errdefs.IsDataLoss(err) }},
		{"bad expected digest", bytes.NewReader(plain), []ApplyOpt{WithExpectedDiffID("sha256:nope")}, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Apply(context.Background(), t.TempDir(), tc.r, tc.opts...)
			if err == nil || !tc.is(err) {
				t.Fatalf("err = %v, wrong class", err)
			}
			t.Log(err)
		})
	}
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(gz)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
	})
	t.Run("trailing data hashed", func(t *testing.T) {
		blob := append(append([]byte{}, plain...), make([]byte, 4096)...)
		res, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(blob))
		if err != nil || res.DiffID.String() != sha(blob) {
			t.Fatalf("diff id %s, %v; want %s", res.DiffID, err, sha(blob))
		}
	})
}

type failReader struct{ err error }

func (f *failReader) Read([]byte) (int, error) { return 0, f.err }

// TestApplyMaxSize: a gzip bomb stops at the limit, with nothing past it
// written; a layer within it applies.
func TestApplyMaxSize(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	bomb := gzipped(t, layer(t, file("zeros", string(make([]byte, 8<<20)))))
	for _, tc := range []struct {
		name string
		max  int64
		ok   bool
	}{
		{"over", 1 << 20, false},
		{"within", 9 << 20, true},
		{"unbounded", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			_, err := Apply(context.Background(), root, bytes.NewReader(bomb), WithMaxSize(tc.max))
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if fi, err := os.Stat(filepath.Join(root, "zeros")); err == nil && fi.Size() > tc.max {
				t.Errorf("wrote %d bytes past a limit of %d", fi.Size(), tc.max)
			}
		})
	}
}

// TestApplyZstdWindow: a zstd frame asking for a window over 128 MiB is
// refused before the decoder allocates it.
func TestApplyZstdWindow(t *testing.T) {
	testkit.RequireRoot(t, "set ownership and make devices")
	// A frame by hand: no content size, window descriptor 2^29 (512 MiB),
	// one raw last block holding the tar.
	tarball := layer(t, file("a", "aaaa"))
	var buf bytes.Buffer
	buf.Write([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (29 - 10) << 3})
	h := uint32(len(tarball))<<3 | 1
	buf.Write([]byte{byte(h), byte(h >> 8), byte(h >> 16)})
	buf.Write(tarball)
	_, err := Apply(context.Background(), t.TempDir(), &buf)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}
