package docker

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/keel-runtime/keel/test/regstub"
)

// TestParallelFetchBounded: a parallel fetch holds results for `parallel`
// parts however many the descriptor claims, so a blob claiming 1e15 bytes
// fails at the registry's real end instead of allocating a slot per part
// (issue 10, item 9); an honest blob of many parts still arrives whole.
func TestParallelFetchBounded(t *testing.T) {
	stub := regstub.Start(t)
	data := make([]byte, 8<<20)
	rand.Read(data)
	blob := regstub.NewBlob("application/vnd.oci.image.layer.v1.tar", data)
	stub.Put("app", blob)
	r := newResolver(t, map[string]any{"parallel": 2, "part_size": 1 << 20, "retries": 0,
		"host": map[string]any{stub.Host: map[string]any{"plain_http": true}}})
	ref := stub.Host + "/app:x"

	if got := readAll(t, r, ref, blob.Desc, 0); !bytes.Equal(got, data) {
		t.Fatalf("parallel fetch of %d parts: %d bytes, differing", len(data)>>20, len(got))
	}

	lying := blob.Desc
	lying.Size = 1e15
	start := time.Now()
	rc, err := r.Fetch(t.Context(), ref, lying, 0)
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if err == nil {
		t.Fatal("a blob claiming 1e15 bytes was read to its end")
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("refused after %s", took)
	}
	t.Logf("refused in %s: %v", time.Since(start), err)
}
