package resolver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// lateWriter is a FileFetcher that sees a cancel only some time after it
// came, as a plugin blocked in a read or a write does, and writes on
// until then.
type lateWriter struct {
	fake
	lag      time.Duration
	returned atomic.Bool
}

func (l *lateWriter) FetchToFile(ctx context.Context, _ string, _ ocispec.Descriptor, offset int64, path string, progress func(int64) error) error {
	defer l.returned.Store(true)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.WriteAt(chunk, offset); err != nil {
			return err
		}
		offset += int64(len(chunk))
		if ctx.Err() != nil {
			time.Sleep(l.lag) // still on the last chunk
			_, err := f.WriteAt(chunk, offset)
			return errors.Join(ctx.Err(), err)
		}
		if err := progress(offset); err != nil {
			return err
		}
	}
}

// TestFetchToFileWaitsForWriter: a FetchToFile cancelled by its caller
// returns only after the plugin's last write, however late the plugin
// sees the cancel; one that ends normally does not wait.
func TestFetchToFileWaitsForWriter(t *testing.T) {
	impl := &lateWriter{lag: 300 * time.Millisecond}
	r, _, _ := serve(t, impl)
	ff, ok := r.(FileFetcher)
	if !ok {
		t.Fatal("the client is no FileFetcher")
	}
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{Digest: digest.FromString("endless"), Size: 1 << 40}

	ctx, cancel := context.WithCancel(t.Context())
	err := ff.FetchToFile(ctx, "example.com/app:v1", desc, 0, path, func(offset int64) error {
		if offset >= 1<<20 {
			cancel()
		}
		return nil
	})
	if err == nil {
		t.Fatal("a cancelled FetchToFile succeeded")
	}
	if !impl.returned.Load() {
		t.Fatalf("FetchToFile returned (%v) while the plugin still wrote the file", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * impl.lag)
	if st2, _ := os.Stat(path); st2.Size() != st.Size() {
		t.Fatalf("the file grew from %d to %d bytes after FetchToFile returned", st.Size(), st2.Size())
	}
}
