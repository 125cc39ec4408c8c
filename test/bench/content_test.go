package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/content"
)

// blobSize is the size of the blob the content benchmarks move.
const blobSize = 1 << 30

// blockSize is the size of the random block a blob repeats, and of each
// write and read: one streamed chunk.
const blockSize = 1 << 20

// randomBlock is a fresh block of random bytes, so each blob is new to the
// store. The generator is seeded from the clock: the bytes only need to
// differ between runs.
func randomBlock() []byte {
	now := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(now, now>>1|1))
	b := make([]byte, blockSize)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeBlob writes blobSize bytes of block repeated to w.
func writeBlob(w io.Writer, block []byte) error { return writeBlobN(w, block, blobSize) }

// writeBlobN writes size bytes (a multiple of blockSize) of block repeated
// to w.
func writeBlobN(w io.Writer, block []byte, size int64) error {
	for range size / blockSize {
		if _, err := w.Write(block); err != nil {
			return err
		}
	}
	return nil
}

// shared is the daemon the content benchmarks share, and the blob the
// ingest left in it for the read benchmark.
var shared struct {
	mu   sync.Mutex
	d    *daemon
	blob digest.Digest
}

func sharedDaemon(ctx context.Context) (*daemon, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.d != nil {
		return shared.d, nil
	}
	d, err := startDaemon(ctx, false)
	if err != nil {
		return nil, err
	}
	shared.d = d
	return d, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.d != nil {
		shared.d.stop()
	}
	if err := writeSummary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// ingestResult is what one ingest measured.
type ingestResult struct {
	digest digest.Digest
	write  time.Duration // Writer open, every byte sent and acknowledged
	commit time.Duration // Commit: size check, fsync, rename, metadata
}

// ingest streams a 1 GiB blob into keeld's content store through the
// client library.
func ingest(ctx context.Context, cs content.Store, ref string) (ingestResult, error) {
	block := randomBlock()
	start := time.Now()
	w, err := cs.Writer(ctx, content.WithRef(ref), content.WithDescriptor(ocispec.Descriptor{Size: blobSize}))
	if err != nil {
		return ingestResult{}, err
	}
	defer w.Close()
	if err := writeBlob(w, block); err != nil {
		return ingestResult{}, err
	}
	// Status waits for every write to be acknowledged: the data is in the
	// plugin's file (page cache) and hashed.
	st, err := w.Status()
	if err != nil {
		return ingestResult{}, err
	}
	if st.Offset != blobSize {
		return ingestResult{}, fmt.Errorf("ingest %q: offset %d after writing %d", ref, st.Offset, blobSize)
	}
	dgst := w.Digest()
	written := time.Now()
	if err := w.Commit(ctx, blobSize, dgst); err != nil {
		return ingestResult{}, err
	}
	return ingestResult{digest: dgst, write: written.Sub(start), commit: time.Since(written)}, nil
}

// BenchmarkContentIngest writes a 1 GiB blob through keeld into the local
// content store. MB/s is the whole ingest; write-MB/s leaves out the
// commit (whose cost is the fsync of 1 GiB, see BenchmarkRawFileWrite);
// the CPU seconds of each process say where the write phase's time goes
// (client: gRPC send; keeld: gRPC relay; content.local: gRPC receive,
// sha256 and the page-cache write).
func BenchmarkContentIngest(b *testing.B) {
	ctx := context.Background()
	d, err := sharedDaemon(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("keeld root on %s (%s)", d.dir, fsType(d.dir))
	cs := d.client.ContentStore()
	b.SetBytes(blobSize)
	var write, commit time.Duration
	before, err := d.cpu(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		r, err := ingest(ctx, cs, fmt.Sprintf("bench-ingest-%d-%d", time.Now().UnixNano(), i))
		if err != nil {
			b.Fatal(err)
		}
		write += r.write
		commit += r.commit
		shared.mu.Lock()
		shared.blob = r.digest
		shared.mu.Unlock()
	}
	b.StopTimer()
	after, err := d.cpu(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)*blobSize/1e6/write.Seconds(), "write-MB/s")
	b.ReportMetric(commit.Seconds()/float64(b.N), "commit-s")
	reportCPU(b, before, after, "")
}

// BenchmarkContentRead reads the 1 GiB blob back through keeld
// sequentially (ReaderAt + content.NewReader): "warm" from the page cache,
// as right after the ingest, and "cold" after its pages were dropped.
func BenchmarkContentRead(b *testing.B) {
	ctx := context.Background()
	d, err := sharedDaemon(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cs := d.client.ContentStore()
	shared.mu.Lock()
	blob := shared.blob
	shared.mu.Unlock()
	if blob == "" {
		r, err := ingest(ctx, cs, fmt.Sprintf("bench-read-%d", time.Now().UnixNano()))
		if err != nil {
			b.Fatal(err)
		}
		blob = r.digest
		shared.mu.Lock()
		shared.blob = blob
		shared.mu.Unlock()
	}
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(blobSize)
			var elapsed time.Duration
			var before, after cpuSample
			for range b.N {
				if cold {
					if err := dropCache(filepath.Join(d.dir, "root")); err != nil {
						b.Fatal(err)
					}
				}
				before, err = d.cpu(ctx)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := readBlob(ctx, cs, blob); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
				after, err = d.cpu(ctx)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/op")
			reportCPU(b, before, after, "last-")
		})
	}
}

// readBlob reads dgst from its start to its end and checks its length.
func readBlob(ctx context.Context, p content.Provider, dgst digest.Digest) error {
	ra, err := p.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst})
	if err != nil {
		return err
	}
	defer ra.Close()
	n, err := io.CopyBuffer(discard{}, content.NewReader(ra), make([]byte, blockSize))
	if err != nil {
		return err
	}
	if n != blobSize {
		return fmt.Errorf("read %s: %d bytes, want %d", dgst, n, blobSize)
	}
	return nil
}

// discard is io.Discard without its ReadFrom, so io.CopyBuffer reads in
// the caller's blockSize buffer, as a real consumer of a blob would.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// dropCache drops the page cache of every regular file under dir (clean
// pages only: they are synced first), so the next read goes to disk.
func dropCache(dir string) error {
	return filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		return dropFileCache(path)
	})
}

// dropFileCache drops the page cache of one file (pages mapped by a running
// process stay).
func dropFileCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// BenchmarkRawSHA256 is the ceiling of the hashing part of an ingest:
// sha256 of 1 GiB in process (Go's crypto/sha256, as the plugin uses).
func BenchmarkRawSHA256(b *testing.B) {
	block := randomBlock()
	b.SetBytes(blobSize)
	b.ResetTimer()
	for range b.N {
		h := sha256.New()
		if err := writeBlob(h, block); err != nil {
			b.Fatal(err)
		}
		h.Sum(nil)
	}
}

// BenchmarkRawFileWrite is the ceiling of the disk part of an ingest: a
// plain 1 GiB file written in 1 MiB writes on the same disk as keeld's
// root, then fsynced. write-MB/s is the page-cache write, fsync-s the sync.
func BenchmarkRawFileWrite(b *testing.B) {
	dir, err := benchDir("keel-bench-raw-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b.Logf("file on %s (%s)", dir, fsType(dir))
	block := randomBlock()
	b.SetBytes(blobSize)
	var write, sync time.Duration
	b.ResetTimer()
	for i := range b.N {
		path := filepath.Join(dir, fmt.Sprintf("blob-%d", i))
		start := time.Now()
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := writeBlob(f, block); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		write += written.Sub(start)
		sync += time.Since(written)
		b.StopTimer()
		os.Remove(path)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N)*blobSize/1e6/write.Seconds(), "write-MB/s")
	b.ReportMetric(sync.Seconds()/float64(b.N), "fsync-s")
}

// BenchmarkRawFileRead is the ceiling of a blob read: a plain 1 GiB file
// read sequentially in 1 MiB reads, warm (page cache) and cold.
func BenchmarkRawFileRead(b *testing.B) {
	dir, err := benchDir("keel-bench-raw-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "blob")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := writeBlob(f, randomBlock()); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(blobSize)
			buf := make([]byte, blockSize)
			for range b.N {
				b.StopTimer()
				if cold {
					if err := dropCache(dir); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(discard{}, f, buf)
				f.Close()
				if err != nil || n != blobSize {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// BenchmarkRawSmallFsync is the floor of a metadata write on this disk: a
// 4 KiB write and fsync, as each bbolt transaction of keeld and of the
// plugins pays at least once (snapshot calls, ingest commits).
func BenchmarkRawSmallFsync(b *testing.B) {
	dir, err := benchDir("keel-bench-raw-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "small"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const n = 200
	data := make([]byte, 4<<10)
	ds := make([]time.Duration, 0, n*b.N)
	b.ResetTimer()
	for range n * b.N {
		start := time.Now()
		if _, err := f.WriteAt(data, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(ds)), "ns/op")
	b.ReportMetric(ms(percentile(ds, 50)), "fsync-p50-ms")
	b.ReportMetric(ms(percentile(ds, 99)), "fsync-p99-ms")
}
