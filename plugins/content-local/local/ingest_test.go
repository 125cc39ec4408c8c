package local_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk/content"
)

// TestResumeVerifiesPrefix: a writer resumes after the bytes the last one
// left only when they are still what it wrote; data changed on disk since
// (or cut short) is started again from 0. Bytes added after it (a writer
// that died without closing) are resumed after the checked part.
func TestResumeVerifiesPrefix(t *testing.T) {
	data := make([]byte, 3<<20)
	rand.Read(data)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   int64
	}{
		{"untouched", func(*testing.T, string) {}, 1 << 20},
		{"flipped byte", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{data[1000] ^ 0xff}, 1000); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"cut short", func(t *testing.T, path string) {
			if err := os.Truncate(path, 1000); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"appended by a writer that died", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(data[1<<20 : 2<<20])
		}, 2 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			s, err := local.Open(root, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := t.Context()
			w, err := s.Writer(ctx, content.WithRef("r"), content.WithDescriptor(desc))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:1<<20])
			w.Close()
			sum := sha256.Sum256([]byte("r"))
			c.damage(t, filepath.Join(root, "ingest", hex.EncodeToString(sum[:]), "data"))

			w, err = s.Writer(ctx, content.WithRef("r"), content.WithDescriptor(desc))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			st, _ := w.Status()
			if st.Offset != c.want {
				t.Fatalf("resumed at %d, want %d", st.Offset, c.want)
			}
			w.Write(data[st.Offset:])
			if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
				t.Fatalf("commit: %v", err)
			}
			got, err := content.ReadBlob(ctx, s, desc)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("blob differs: %v", err)
			}
		})
	}
}
