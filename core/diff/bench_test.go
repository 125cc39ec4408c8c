package diff

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// benchFiles is about the file count of the reference image.
const benchFiles = 7000

// benchLayer returns a gzip and a zstd layer of the first benchFiles regular
// files of /usr/share (with their dirs and symlinks), cached between runs in
// the temp dir, and the layer's file count and uncompressed size.
func benchLayer(b *testing.B) (gz, zst string, files int, size int64) {
	b.Helper()
	cache := filepath.Join(os.TempDir(), "keel-diff-bench")
	gz, zst = filepath.Join(cache, "usr-share.tar.gz"), filepath.Join(cache, "usr-share.tar.zst")
	plain := filepath.Join(cache, "usr-share.tar")
	if _, err := os.Stat(zst); err != nil {
		if err := os.MkdirAll(cache, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := writeTree(plain, "/usr/share", benchFiles); err != nil {
			b.Fatal(err)
		}
		compressFile(b, plain, gz, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
		compressFile(b, plain, zst, func(w io.Writer) io.WriteCloser {
			zw, _ := zstd.NewWriter(w)
			return zw
		})
	}
	f, err := os.Open(plain)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files++
		}
	}
	st, _ := f.Stat()
	return gz, zst, files, st.Size()
}

// writeTree writes a tar of dir's first n regular files (in walk order)
// with the dirs and symlinks met on the way.
func writeTree(out, dir string, n int) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	count := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || count >= n {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			link, _ = os.Readlink(p)
		case fi.Mode().IsRegular(), fi.IsDir():
		default:
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, src, h.Size)
			src.Close()
			if err != nil {
				return err
			}
			count++
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func compressFile(b *testing.B, in, out string, mk func(io.Writer) io.WriteCloser) {
	src, err := os.ReadFile(in)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	zw := mk(&buf)
	zw.Write(src)
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkApply applies a ~7,000 file layer of /usr/share onto an empty dir
// (and through an overlay mount), beside GNU tar -xzf of the same layer.
// Each run writes into a fresh dir; removing it and syncing are not timed.
func BenchmarkApply(b *testing.B) {
	testkit.RequireRoot(b, "set ownership and make devices")
	gz, zst, files, size := benchLayer(b)
	gzSt, _ := os.Stat(gz)
	b.Logf("layer: %d files, %.1f MiB uncompressed, %.1f MiB gzip", files, float64(size)/(1<<20), float64(gzSt.Size())/(1<<20))
	work := b.TempDir()

	apply := func(blob string, opts ...ApplyOpt) func(b *testing.B, dir string) {
		return func(b *testing.B, dir string) {
			f, err := os.Open(blob)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if _, err := Apply(context.Background(), dir, f, opts...); err != nil {
				b.Fatal(err)
			}
		}
	}
	cases := []struct {
		name    string
		overlay bool
		run     func(b *testing.B, dir string)
	}{
		{"keel/gzip", false, apply(gz)},
		{"keel/gzip/inline", false, apply(gz, WithWorkers(0))},
		{"keel/zstd", false, apply(zst)},
		{"keel/gzip/overlay", true, apply(gz)},
		{"tar-xzf", false, func(b *testing.B, dir string) {
			if out, err := exec.Command("tar", "-xzf", gz, "-C", dir).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v: %s", err, out)
			}
		}},
		{"tar-xzf/overlay", true, func(b *testing.B, dir string) {
			if out, err := exec.Command("tar", "-xzf", gz, "-C", dir).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v: %s", err, out)
			}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if c.name[:3] == "tar" {
				if _, err := exec.LookPath("tar"); err != nil {
					b.Skip("no tar")
				}
			}
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				dir := filepath.Join(work, "run")
				os.RemoveAll(dir)
				os.Mkdir(dir, 0o755)
				target := dir
				if c.overlay {
					target = overlayBench(b, dir)
				}
				unix.Sync()
				b.StartTimer()
				c.run(b, target)
				b.StopTimer()
				if c.overlay {
					unix.Unmount(target, unix.MNT_DETACH)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}

// overlayBench mounts an overlay with an empty lower under dir.
func overlayBench(b *testing.B, dir string) string {
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	merged := filepath.Join(dir, "merged")
	opts := "lowerdir=" + filepath.Join(dir, "lower") + ",upperdir=" + filepath.Join(dir, "upper") + ",workdir=" + filepath.Join(dir, "work")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		b.Skipf("overlay: %v", err)
	}
	return merged
}
