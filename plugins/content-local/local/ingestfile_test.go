package local_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// namingStore is a local store that names another file than its ingest's.
type namingStore struct {
	*local.Store
	name func(real string) string
}

func (s namingStore) IngestPath(ctx context.Context, w content.Writer) (string, error) {
	real, err := s.Store.IngestPath(ctx, w)
	if err != nil {
		return "", err
	}
	return s.name(real), nil
}

// A client writes only into an ingest file beneath the store's root that
// is a regular file of its own: whatever else the store names is refused,
// naming it, and nothing is written there.
func TestIngestFileRefusesOtherFiles(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	const was = "the host's file"
	for _, c := range []struct {
		name string
		path func(root, real string) string
	}{
		{"outside the root", func(root, real string) string { return victim }},
		{"dot-dot out of the root", func(root, real string) string { return root + "/../" + filepath.Base(outside) + "/victim" }},
		{"relative", func(root, real string) string { return "ingest/data" }},
		{"symlink in the root", func(root, real string) string {
			link := filepath.Join(root, "link")
			if err := os.Symlink(victim, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{"hard link in the root", func(root, real string) string {
			link := filepath.Join(root, "hardlink")
			if err := os.Link(victim, link); err != nil {
				t.Skipf("hard link across temp dirs: %v", err)
			}
			return link
		}},
		{"the root itself", func(root, real string) string { return root }},
		{"/dev/full", func(root, real string) string { return "/dev/full" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(victim, []byte(was), 0o644); err != nil {
				t.Fatal(err)
			}
			// The root is a dir beside the victim, so a hard link can be made.
			root, err := os.MkdirTemp(outside, "root-")
			if err != nil {
				t.Fatal(err)
			}
			st, err := local.Open(root, nil)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := serveStore(t, namingStore{Store: st, name: func(real string) string { return c.path(root, real) }}, content.WithIngestFiles(root))
			data := []byte("bytes for somewhere else")
			desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
			w, err := s.Writer(t.Context(), content.WithRef("r"), content.WithDescriptor(desc))
			if err == nil {
				w.Write(data)
				w.Close()
				t.Fatal("writer opened")
			}
			if !errdefs.IsInternal(err) || !strings.Contains(err.Error(), "named by the store") {
				t.Errorf("error = %v, want Internal naming the store's file", err)
			}
			if got, _ := os.ReadFile(victim); !bytes.Equal(got, []byte(was)) {
				t.Errorf("victim now holds %q", got)
			}
			// The refused writer let go of the ingest.
			if err := st.Abort(t.Context(), "r"); err != nil {
				t.Errorf("abort after the refusal: %v", err)
			}
		})
	}
}

// Through its file, an ingest takes the bytes whole: the store hashed them
// once, at its STATs and at Commit.
func TestIngestFileWritesBlob(t *testing.T) {
	root := t.TempDir()
	st, err := local.Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := serveStore(t, st, content.WithIngestFiles(root))
	desc := writeRandom(t, s, 9<<20+5)
	if info, err := s.Info(t.Context(), desc.Digest); err != nil || info.Size != desc.Size {
		t.Fatalf("info = %+v, %v", info, err)
	}
}
