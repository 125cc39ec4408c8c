package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestContent: ingest from stdin, get the same bytes back, list, inspect,
// label and remove blobs with the CLI.
func TestContent(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	// A few MiB, so the blob crosses the wire in several chunks.
	data := randomBytes(t, 3<<20+17)
	want := digest.FromBytes(data)
	r := k.keelIn(bytes.NewReader(data), "content", "ingest", "blob-1")
	if r.code != 0 || strings.TrimSpace(r.stdout) != want.String() {
		t.Fatalf("ingest printed %q, want %s; %v", r.stdout, want, r)
	}
	if got := k.ok("content", "get", want.String()); got != string(data) {
		t.Fatalf("get returned %d bytes (digest %s), want the %d ingested", len(got), digest.FromString(got), len(data))
	}

	small := []byte("a small blob\n")
	smallDigest := digest.FromBytes(small)
	if r := k.keelIn(bytes.NewReader(small), "content", "ingest", "blob-2", "--expected-digest", smallDigest.String()); r.code != 0 {
		t.Fatal(r)
	}
	// Ingesting what is stored already prints the digest again.
	if r := k.keelIn(bytes.NewReader(small), "content", "ingest", "blob-3"); r.code != 0 || strings.TrimSpace(r.stdout) != smallDigest.String() {
		t.Fatalf("second ingest of a stored blob: %v", r)
	}

	var infos []content.Info
	k.okJSON(&infos, "content", "ls")
	sizes := map[digest.Digest]int64{}
	for _, i := range infos {
		sizes[i.Digest] = i.Size
	}
	if len(sizes) != 2 || sizes[want] != int64(len(data)) || sizes[smallDigest] != int64(len(small)) {
		t.Errorf("content ls: %v", sizes)
	}

	var info content.Info
	if err := json.Unmarshal([]byte(k.ok("content", "info", smallDigest.String())), &info); err != nil {
		t.Fatal(err)
	}
	if info.Digest != smallDigest || info.Size != int64(len(small)) || info.CreatedAt.IsZero() {
		t.Errorf("content info: %+v", info)
	}

	if out := k.ok("content", "label", smallDigest.String(), "kind=note", "keep=1"); strings.TrimSpace(out) != "keep=1,kind=note" {
		t.Errorf("content label printed %q", out)
	}
	k.ok("content", "label", smallDigest.String(), "keep=")
	if got := strings.Fields(k.ok("content", "ls", "-q", `labels.kind==note`)); len(got) != 1 || got[0] != smallDigest.String() {
		t.Errorf("ls -q labels.kind==note: %q", got)
	}
	if err := json.Unmarshal([]byte(k.ok("content", "info", smallDigest.String())), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Labels) != 1 || info.Labels["kind"] != "note" {
		t.Errorf("labels after removing keep: %v", info.Labels)
	}

	k.ok("content", "rm", smallDigest.String())
	for _, args := range [][]string{
		{"content", "get", smallDigest.String()},
		{"content", "info", smallDigest.String()},
		{"content", "rm", smallDigest.String()},
	} {
		if msg := oneLineError(t, k.keel(args...)); !strings.Contains(msg, "not found") || !strings.Contains(msg, smallDigest.Encoded()[:12]) {
			t.Errorf("keel %s after rm: %q, want not found naming the digest", strings.Join(args, " "), msg)
		}
	}
	if msg := oneLineError(t, k.keel("content", "get", "sha256:nothex")); !strings.Contains(msg, "invalid argument") {
		t.Errorf("get of a malformed digest: %q", msg)
	}
}

// TestContentExpectedDigest: a blob that is not what --expected-digest
// says fails and is not stored.
func TestContentExpectedDigest(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	data := []byte("the real bytes")
	wrong := digest.FromString("other bytes")
	r := k.keelIn(bytes.NewReader(data), "content", "ingest", "ref-x", "--expected-digest", wrong.String())
	if msg := oneLineError(t, r); !strings.Contains(msg, "failed precondition") {
		t.Errorf("ingest with a wrong expected digest: %q", msg)
	}
	if r.stdout != "" {
		t.Errorf("a failed ingest printed %q", r.stdout)
	}
	for _, d := range []digest.Digest{wrong, digest.FromBytes(data)} {
		if r := k.keel("content", "info", d.String()); r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("%s stored after a failed ingest: %v", d, r)
		}
	}
	if out := k.ok("content", "ls", "-q"); out != "" {
		t.Errorf("content ls after a failed ingest: %q", out)
	}
	if r := k.keelIn(bytes.NewReader(data), "content", "ingest", "ref-y", "--expected-size", "3"); r.code != 1 {
		t.Errorf("ingest with a wrong expected size: %v", r)
	}
}

// TestContentResume: an ingest interrupted half way through the Go client
// resumes through the CLI given the whole blob again.
func TestContentResume(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	data := randomBytes(t, 2<<20+3)
	half := len(data) / 2
	cs := k.client(t, "default").ContentStore()
	w, err := cs.Writer(ctx, content.WithRef("resume-me"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := cs.Status(ctx, "resume-me")
	if err != nil {
		t.Fatal(err)
	}
	if st.Offset != int64(half) {
		t.Fatalf("status after the interrupted ingest: offset %d, want %d", st.Offset, half)
	}
	if out := k.ok("content", "ingests", "ls", "-q"); strings.TrimSpace(out) != "resume-me" {
		t.Errorf("ingests ls -q: %q", out)
	}

	r := k.keelIn(bytes.NewReader(data), "content", "ingest", "resume-me")
	if want := digest.FromBytes(data).String(); r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Fatalf("resumed ingest: want %s; %v", want, r)
	}
	got, err := content.ReadBlob(ctx, cs, descriptorOf(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("resumed blob differs: %d bytes, digest %s", len(got), digest.FromBytes(got))
	}
	if out := k.ok("content", "ingests", "ls", "-q"); out != "" {
		t.Errorf("ingests left after commit: %q", out)
	}
}

// TestContentNamespaces: a blob ingested in one namespace is not found in
// another.
func TestContentNamespaces(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	data := []byte("only in a")
	dgst := digest.FromBytes(data)
	if r := k.keelIn(bytes.NewReader(data), "-n", "a", "content", "ingest", "r"); r.code != 0 {
		t.Fatal(r)
	}
	if got := k.ok("-n", "a", "content", "get", dgst.String()); got != string(data) {
		t.Errorf("get in a: %q", got)
	}
	for _, args := range [][]string{
		{"-n", "b", "content", "get", dgst.String()},
		{"-n", "b", "content", "info", dgst.String()},
		{"content", "info", dgst.String()}, // default
	} {
		if msg := oneLineError(t, k.keel(args...)); !strings.Contains(msg, "not found") {
			t.Errorf("keel %s: %q, want not found", strings.Join(args, " "), msg)
		}
	}
	if out := k.ok("-n", "b", "content", "ls", "-q"); out != "" {
		t.Errorf("content ls in b: %q", out)
	}

	// The Go client says the same, with the class kept.
	ctx := context.Background()
	if _, err := k.client(t, "b").ContentStore().Info(ctx, dgst); !errdefs.IsNotFound(err) {
		t.Errorf("Info in b: %v, want NotFound", err)
	}
	if _, err := k.client(t, "a").ContentStore().Info(ctx, dgst); err != nil {
		t.Errorf("Info in a: %v", err)
	}

}

func descriptorOf(data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
