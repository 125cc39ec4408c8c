package contenttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Binary opens the content plugin executable at path as keeld does
// (see conformance.Binary).
func Binary(path string, opts ...conformance.Option) conformance.Opener[content.Store] {
	return conformance.Binary(path, sdk.KindContent, wrapContent, opts...)
}

// InProcess opens the content store factory builds inside the test
// process, across gRPC (see conformance.InProcess).
func InProcess(factory content.Factory, opts ...conformance.Option) conformance.Opener[content.Store] {
	return conformance.InProcess(content.Plugin("conformance", "dev", factory), wrapContent, opts...)
}

// wrapContent makes the client keeld makes: it writes ingests into the
// store's files when the store names them (capability "ingest-path").
func wrapContent(conn grpc.ClientConnInterface, root string, stop func() error) content.Store {
	return &stoppingStore{
		Store:  content.NewClient(conn, content.WithIngestFiles(root)),
		stream: content.NewClient(conn),
		stop:   stop,
	}
}

// stoppingStore is the sdk client whose Close ends the plugin.
type stoppingStore struct {
	content.Store
	// stream is a client of the same plugin that sends every byte on the
	// Write stream, as a host without the store's files does.
	stream content.Store
	stop   func() error
}

// overStream runs body on the plugin's stream-only client: for a store
// with the capability "ingest-path", the way without it must still work.
func overStream(body func(context.Context, conformance.T, *conformance.Env[content.Store])) func(context.Context, conformance.T, *conformance.Env[content.Store]) {
	return func(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
		s, ok := env.P.(*stoppingStore)
		if !ok {
			t.Skipf("the opener's store (%T) wraps the suite's client: the stream way is the plugin's own suite's to test", env.P)
		}
		env.P = &stoppingStore{Store: s.stream, stream: s.stream, stop: s.stop}
		body(ctx, t, env)
	}
}

// BlobPath reaches the plugin's BlobPath; the plugin answers NotImplemented
// when it lacks the capability.
func (s *stoppingStore) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	return s.Store.(content.BlobPather).BlobPath(ctx, dgst)
}

func (s *stoppingStore) Close() error {
	err := s.Store.Close()
	if serr := s.stop(); err == nil {
		err = serr
	}
	return err
}

// Run runs the content store suite against the plugins open opens.
func Run(t conformance.T, open conformance.Opener[content.Store], opts ...conformance.Option) {
	t.Helper()
	conformance.RunCases(t, contentCases(), open, conformance.NewOptions(opts))
}

// largeBlobSize is the size of the streamed blob case: far more than any
// message or buffer, generated on the fly.
const largeBlobSize = 256 << 20

func contentCases() []conformance.Case[content.Store] {
	cases := []conformance.Case[content.Store]{
		{Name: "WriteReadBack", Body: contentWriteReadBack},
		{Name: "MissingBlob", Body: contentMissingBlob},
		{Name: "WriterNeedsRef", Body: contentWriterNeedsRef},
		{Name: "CommitWrongDigest", Body: contentCommitWrongDigest},
		{Name: "CommitWrongSize", Body: contentCommitWrongSize},
		{Name: "ResumeIngest", Body: contentResumeIngest},
		{Name: "ChangedDescriptorRestarts", Body: contentChangedDescriptorRestarts},
		{Name: "WriterStatusAfterWrite", Body: contentWriterStatusAfterWrite},
		{Name: "ReopenedIngestKeepsUpdatedAt", Body: contentReopenKeepsUpdatedAt},
		{Name: "EmptyLabelNotStored", Body: contentEmptyLabelNotStored},
		{Name: "WriteBlobResumes", Body: contentWriteBlobResumes},
		{Name: "TruncateIngest", Body: contentTruncateIngest},
		{Name: "ConcurrentWriterLocked", Body: contentConcurrentWriterLocked},
		{Name: "AbortIngest", Body: contentAbortIngest},
		{Name: "ListStatusesFilters", Body: contentListStatuses},
		{Name: "UpdateLabels", Body: contentUpdateLabels},
		{Name: "WalkFilters", Body: contentWalkFilters},
		{Name: "DeleteBlob", Body: contentDeleteBlob},
		{Name: "CommitExisting", Body: contentCommitExisting},
		{Name: "BlobPath", Needs: []string{content.CapabilityBlobPath}, Body: contentBlobPath},
		{Name: "LargeBlobStreamed", Body: contentLargeBlob},
		{Name: "RestartKeepsBlobsAndIngests", Body: contentRestart},
		{Name: "IngestFileHostDies", Needs: []string{content.CapabilityIngestPath}, Body: contentIngestFileHostDies},
	}
	// A store with ingest files is written through them above; these
	// write over the stream again.
	for _, c := range []conformance.Case[content.Store]{
		{Name: "WriteReadBack", Body: contentWriteReadBack},
		{Name: "CommitWrongDigest", Body: contentCommitWrongDigest},
		{Name: "ResumeIngest", Body: contentResumeIngest},
		{Name: "WriterStatusAfterWrite", Body: contentWriterStatusAfterWrite},
		{Name: "TruncateIngest", Body: contentTruncateIngest},
		{Name: "LargeBlobStreamed", Body: contentLargeBlob},
	} {
		cases = append(cases, conformance.Case[content.Store]{
			Name:  c.Name + "OverStream",
			Needs: []string{content.CapabilityIngestPath},
			Body:  overStream(c.Body),
		})
	}
	return cases
}

// blob is test data with its descriptor.
type blob struct {
	data []byte
	desc ocispec.Descriptor
}

func newBlob(seed uint64, size int) blob {
	data := make([]byte, size)
	rand.NewChaCha8(seedBytes(seed)).Read(data)
	return blob{data: data, desc: ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayer,
		Digest:    digest.FromBytes(data),
		Size:      int64(size),
	}}
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

// commitBlob writes b under ref through a Writer and commits it.
func commitBlob(ctx context.Context, t conformance.T, s content.Store, ref string, b blob, opts ...content.Opt) {
	t.Helper()
	w, err := s.Writer(ctx, content.WithRef(ref), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer %q: %v", ref, err)
	}
	defer w.Close()
	if _, err := w.Write(b.data); err != nil {
		t.Fatalf("write %q: %v", ref, err)
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest, opts...); err != nil {
		t.Fatalf("commit %q: %v", ref, err)
	}
}

// writePartial writes data into ref and closes the writer without commit.
func writePartial(ctx context.Context, t conformance.T, s content.Store, ref string, data []byte, desc ocispec.Descriptor) {
	t.Helper()
	w, err := s.Writer(ctx, content.WithRef(ref), content.WithDescriptor(desc))
	if err != nil {
		t.Fatalf("writer %q: %v", ref, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write %q: %v", ref, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer %q: %v", ref, err)
	}
}

func checkBlob(ctx context.Context, t conformance.T, s content.Store, b blob) {
	t.Helper()
	got, err := content.ReadBlob(ctx, s, b.desc)
	if err != nil {
		t.Fatalf("read %s: %v", b.desc.Digest, err)
	}
	if !bytes.Equal(got, b.data) {
		t.Fatalf("read %s: %d bytes differ from the %d written", b.desc.Digest, len(got), len(b.data))
	}
}

func contentWriteReadBack(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(1, 3*sdk.ChunkSize+12345)
	w, err := s.Writer(ctx, content.WithRef("write-read"), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	// Uneven writes: the store must not care how the data is split.
	for _, part := range [][]byte{b.data[:1], b.data[1:5000], b.data[5000 : 2*sdk.ChunkSize+7], b.data[2*sdk.ChunkSize+7:]} {
		if _, err := w.Write(part); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	st, err := w.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Ref != "write-read" || st.Offset != b.desc.Size {
		t.Errorf("status = ref %q offset %d, want write-read %d", st.Ref, st.Offset, b.desc.Size)
	}
	if w.Digest() != b.desc.Digest {
		t.Errorf("writer digest %s, want %s", w.Digest(), b.desc.Digest)
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest, content.WithLabels(map[string]string{"a": "1"})); err != nil {
		t.Fatalf("commit: %v", err)
	}
	info, err := s.Info(ctx, b.desc.Digest)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Digest != b.desc.Digest || info.Size != b.desc.Size || info.Labels["a"] != "1" {
		t.Errorf("info = %+v, want digest %s size %d label a=1", info, b.desc.Digest, b.desc.Size)
	}
	if info.CreatedAt.IsZero() || info.UpdatedAt.IsZero() {
		t.Errorf("info times unset: %+v", info)
	}
	if _, err := s.Status(ctx, "write-read"); !errdefs.IsNotFound(err) {
		t.Errorf("status of committed ingest: %v, want not found", err)
	}
	checkBlob(ctx, t, s, b)

	ra, err := s.ReaderAt(ctx, b.desc)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer ra.Close()
	if ra.Size() != b.desc.Size {
		t.Errorf("reader size %d, want %d", ra.Size(), b.desc.Size)
	}
	// Ranged reads, out of order: backwards, across chunks, at the end.
	for _, r := range []struct{ off, n int64 }{
		{b.desc.Size - 10, 10}, {0, 1}, {sdk.ChunkSize - 3, 7}, {12345, 2 * sdk.ChunkSize}, {17, 100}, {17 + 100, 50},
	} {
		p := make([]byte, r.n)
		n, err := ra.ReadAt(p, r.off)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == r.n) {
			t.Fatalf("read at %d+%d: %d, %v", r.off, r.n, n, err)
		}
		if !bytes.Equal(p[:n], b.data[r.off:r.off+r.n]) {
			t.Errorf("read at %d+%d: wrong bytes", r.off, r.n)
		}
	}
	p := make([]byte, 20)
	n, err := ra.ReadAt(p, b.desc.Size-5)
	if n != 5 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:5], b.data[b.desc.Size-5:]) {
		t.Errorf("read over the end: %d, %v; want 5, EOF", n, err)
	}
	if n, err := ra.ReadAt(p, b.desc.Size); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read at the end: %d, %v; want 0, EOF", n, err)
	}
	all, err := io.ReadAll(content.NewReader(ra))
	if err != nil || !bytes.Equal(all, b.data) {
		t.Errorf("sequential read: %d bytes, %v", len(all), err)
	}
}

func contentMissingBlob(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	d := digest.FromString("never written")
	if _, err := s.Info(ctx, d); !errdefs.IsNotFound(err) {
		t.Errorf("info: %v, want not found", err)
	}
	if _, err := s.ReaderAt(ctx, ocispec.Descriptor{Digest: d}); !errdefs.IsNotFound(err) {
		t.Errorf("reader: %v, want not found", err)
	}
	if err := s.Delete(ctx, d); !errdefs.IsNotFound(err) {
		t.Errorf("delete: %v, want not found", err)
	}
	if _, err := s.Update(ctx, content.Info{Digest: d, Labels: map[string]string{"a": "b"}}, "labels.a"); !errdefs.IsNotFound(err) {
		t.Errorf("update: %v, want not found", err)
	}
	if _, err := s.Status(ctx, "no-such-ref"); !errdefs.IsNotFound(err) {
		t.Errorf("status: %v, want not found", err)
	}
	if err := s.Abort(ctx, "no-such-ref"); !errdefs.IsNotFound(err) {
		t.Errorf("abort: %v, want not found", err)
	}
	if _, err := s.Info(ctx, "sha256:nothex"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("info of a bad digest: %v, want invalid argument", err)
	}
}

func contentWriterNeedsRef(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	if _, err := env.P.Writer(ctx); !errdefs.IsInvalidArgument(err) {
		t.Errorf("writer without ref: %v, want invalid argument", err)
	}
}

func contentCommitWrongDigest(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(2, 1000)
	w, err := s.Writer(ctx, content.WithRef("wrong-digest"))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	if _, err := w.Write(b.data); err != nil {
		t.Fatalf("write: %v", err)
	}
	wrong := digest.FromString("something else")
	if err := w.Commit(ctx, b.desc.Size, wrong); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit with wrong digest: %v, want failed precondition", err)
	}
	w.Close()
	for _, d := range []digest.Digest{wrong, b.desc.Digest} {
		if _, err := s.Info(ctx, d); !errdefs.IsNotFound(err) {
			t.Errorf("info %s after refused commit: %v, want not found", d, err)
		}
	}
	st, err := s.Status(ctx, "wrong-digest")
	if err != nil {
		t.Fatalf("ingest after refused commit: %v, want kept", err)
	}
	if st.Offset != b.desc.Size {
		t.Errorf("kept ingest offset %d, want %d", st.Offset, b.desc.Size)
	}
	// The kept ingest still commits with the right digest.
	w, err = s.Writer(ctx, content.WithRef("wrong-digest"))
	if err != nil {
		t.Fatalf("writer again: %v", err)
	}
	defer w.Close()
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil {
		t.Fatalf("commit with the right digest: %v", err)
	}
	checkBlob(ctx, t, s, b)
}

func contentCommitWrongSize(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(3, 1000)
	w, err := s.Writer(ctx, content.WithRef("wrong-size"))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	if _, err := w.Write(b.data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Commit(ctx, b.desc.Size+1, b.desc.Digest); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit with wrong size: %v, want failed precondition", err)
	}
	w.Close()
	if _, err := s.Info(ctx, b.desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("info after refused commit: %v, want not found", err)
	}
	if _, err := s.Status(ctx, "wrong-size"); err != nil {
		t.Errorf("ingest after refused commit: %v, want kept", err)
	}
}

func contentResumeIngest(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(4, 2*sdk.ChunkSize+999)
	half := len(b.data) / 2
	writePartial(ctx, t, s, "resume", b.data[:half], b.desc)
	st, err := s.Status(ctx, "resume")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Offset != int64(half) || st.Total != b.desc.Size || st.Expected != b.desc.Digest {
		t.Errorf("status = %+v, want offset %d total %d expected %s", st, half, b.desc.Size, b.desc.Digest)
	}
	w, err := s.Writer(ctx, content.WithRef("resume"), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer again: %v", err)
	}
	defer w.Close()
	ws, err := w.Status()
	if err != nil {
		t.Fatalf("writer status: %v", err)
	}
	if ws.Offset != int64(half) {
		t.Fatalf("resumed at %d, want %d", ws.Offset, half)
	}
	if _, err := w.Write(b.data[ws.Offset:]); err != nil {
		t.Fatalf("write rest: %v", err)
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil {
		t.Fatalf("commit: %v", err)
	}
	checkBlob(ctx, t, s, b)
}

// contentWriterStatusAfterWrite: a writer's Status reflects every Write
// that returned before it, offset and time, however the writes travel.
// contentChangedDescriptorRestarts: an ingest reopened for another size
// or digest than it was written for starts again at 0 (its bytes are not
// that blob's), and a writer opened without a size or digest commits
// against none, never against an earlier writer's.
func contentChangedDescriptorRestarts(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	for i, c := range []struct {
		name   string
		before ocispec.Descriptor
	}{
		{"size", ocispec.Descriptor{Size: 1_000_000_000_000_000}},
		{"digest", ocispec.Descriptor{Digest: digest.FromString("another blob")}},
		{"both", ocispec.Descriptor{Digest: digest.FromString("another blob"), Size: 1001}},
	} {
		b := newBlob(uint64(50+i), 1000)
		ref := "changed-" + c.name
		writePartial(ctx, t, s, ref, b.data[:300], c.before)
		w, err := s.Writer(ctx, content.WithRef(ref), content.WithDescriptor(b.desc))
		if err != nil {
			t.Fatalf("%s: writer for the real blob: %v", c.name, err)
		}
		st, err := w.Status()
		if err != nil {
			t.Fatalf("%s: status: %v", c.name, err)
		}
		if st.Offset != 0 {
			t.Errorf("%s: reopened for another descriptor at offset %d, want 0", c.name, st.Offset)
			w.Truncate(0)
		}
		if _, err := w.Write(b.data); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("%s: commit: %v", c.name, err)
		}
		w.Close()
		checkBlob(ctx, t, s, b)
	}

	// A huge size left by a refused writer is not what a later writer
	// without one commits against.
	other := newBlob(53, 700)
	writePartial(ctx, t, s, "stale-size", nil, ocispec.Descriptor{Size: 1_000_000_000_000_000})
	w, err := s.Writer(ctx, content.WithRef("stale-size"))
	if err != nil {
		t.Fatalf("writer without a descriptor: %v", err)
	}
	defer w.Close()
	if _, err := w.Write(other.data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Commit(ctx, 0, ""); err != nil {
		t.Fatalf("commit without size or digest after a stale size: %v", err)
	}
	checkBlob(ctx, t, s, other)
}

func contentWriterStatusAfterWrite(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(40, 3*sdk.ChunkSize+77)
	w, err := s.Writer(ctx, content.WithRef("status-after-write"), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	var last time.Time
	for _, end := range []int{1, 100, sdk.ChunkSize + 3, len(b.data) - 1, len(b.data)} {
		st, err := w.Status()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		start := int(st.Offset)
		before := time.Now()
		if _, err := w.Write(b.data[start:end]); err != nil {
			t.Fatalf("write to %d: %v", end, err)
		}
		st, err = w.Status()
		if err != nil {
			t.Fatalf("status after write to %d: %v", end, err)
		}
		if st.Offset != int64(end) {
			t.Errorf("status after write to %d: offset %d", end, st.Offset)
		}
		if st.UpdatedAt.Before(before) || st.UpdatedAt.Before(last) {
			t.Errorf("status after write to %d: updated %v, before the write (%v) or the last one (%v)", end, st.UpdatedAt, before, last)
		}
		last = st.UpdatedAt
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// contentReopenKeepsUpdatedAt: an ingest reports, to Status, ListStatuses
// and a new writer, the UpdatedAt its last writer reported.
func contentReopenKeepsUpdatedAt(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(41, 2*sdk.ChunkSize+5)
	const ref = "reopen-updated"
	w, err := s.Writer(ctx, content.WithRef(ref), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	if _, err := w.Write(b.data[:sdk.ChunkSize+1]); err != nil {
		t.Fatalf("write: %v", err)
	}
	want, err := w.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	check := func(how string, st content.Status) {
		t.Helper()
		if !st.UpdatedAt.Equal(want.UpdatedAt) || !st.StartedAt.Equal(want.StartedAt) || st.Offset != want.Offset {
			t.Errorf("%s: started %v updated %v offset %d; the writer reported started %v updated %v offset %d",
				how, st.StartedAt, st.UpdatedAt, st.Offset, want.StartedAt, want.UpdatedAt, want.Offset)
		}
	}
	st, err := s.Status(ctx, ref)
	if err != nil {
		t.Fatalf("store status: %v", err)
	}
	check("Status", st)
	sts, err := s.ListStatuses(ctx, "ref=="+ref)
	if err != nil || len(sts) != 1 {
		t.Fatalf("list statuses: %v, %v", sts, err)
	}
	check("ListStatuses", sts[0])
	for i := range 2 {
		w, err = s.Writer(ctx, content.WithRef(ref), content.WithDescriptor(b.desc))
		if err != nil {
			t.Fatalf("writer again: %v", err)
		}
		st, err = w.Status()
		if err != nil {
			t.Fatalf("reopened status: %v", err)
		}
		check(fmt.Sprintf("reopened writer %d", i+1), st)
		// A writer that writes nothing reports the same time on.
		if err := w.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if err := s.Abort(ctx, ref); err != nil {
		t.Fatalf("abort: %v", err)
	}
}

// contentEmptyLabelNotStored: a label given the empty value at commit is
// not stored (containerd's rule: an empty value deletes).
func contentEmptyLabelNotStored(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(42, 64)
	commitBlob(ctx, t, s, "empty-label", b, content.WithLabels(map[string]string{"a": "1", "gone": ""}))
	info, err := s.Info(ctx, b.desc.Digest)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	if want := map[string]string{"a": "1"}; !mapsEqual(info.Labels, want) {
		t.Errorf("labels %v, want %v", info.Labels, want)
	}
}

// onlyReader hides every method but Read, so WriteBlob must discard.
type onlyReader struct{ io.Reader }

func contentWriteBlobResumes(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	for i, seek := range []bool{true, false} {
		b := newBlob(uint64(40+i), sdk.ChunkSize+4321)
		ref := fmt.Sprintf("writeblob-%v", seek)
		writePartial(ctx, t, s, ref, b.data[:777], b.desc)
		var r io.Reader = bytes.NewReader(b.data)
		if !seek {
			r = onlyReader{r}
		}
		if err := content.WriteBlob(ctx, s, ref, r, b.desc, content.WithLabels(map[string]string{"k": "v"})); err != nil {
			t.Fatalf("write blob (seeker %v): %v", seek, err)
		}
		checkBlob(ctx, t, s, b)
		// Already there: success, nothing to do.
		if err := content.WriteBlob(ctx, s, ref, bytes.NewReader(b.data), b.desc); err != nil {
			t.Errorf("write blob again: %v, want success", err)
		}
	}
}

func contentTruncateIngest(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(5, 5000)
	w, err := s.Writer(ctx, content.WithRef("truncate"))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("garbage that is not the blob")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Truncate(0); err != nil {
		t.Fatalf("truncate: %v", err)
	}
	if st, err := w.Status(); err != nil || st.Offset != 0 {
		t.Fatalf("status after truncate: %+v, %v; want offset 0", st, err)
	}
	if _, err := w.Write(b.data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil {
		t.Fatalf("commit: %v", err)
	}
	checkBlob(ctx, t, s, b)
}

func contentConcurrentWriterLocked(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	w1, err := s.Writer(ctx, content.WithRef("locked"))
	if err != nil {
		t.Fatalf("first writer: %v", err)
	}
	if _, err := w1.Write([]byte("held")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if w2, err := s.Writer(ctx, content.WithRef("locked")); !errdefs.IsUnavailable(err) {
		if err == nil {
			w2.Close()
		}
		t.Fatalf("second writer: %v, want unavailable", err)
	}
	if err := s.Abort(ctx, "locked"); !errdefs.IsUnavailable(err) {
		t.Errorf("abort of a held ingest: %v, want unavailable", err)
	}
	// Another ref is not held.
	other, err := s.Writer(ctx, content.WithRef("locked-other"))
	if err != nil {
		t.Fatalf("writer on another ref: %v", err)
	}
	other.Close()
	if err := w1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	w3, err := s.Writer(ctx, content.WithRef("locked"))
	if err != nil {
		t.Fatalf("writer after close: %v", err)
	}
	defer w3.Close()
	if st, err := w3.Status(); err != nil || st.Offset != 4 {
		t.Errorf("status after reopen: %+v, %v; want offset 4", st, err)
	}
}

func contentAbortIngest(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	writePartial(ctx, t, s, "abort", []byte("partial"), ocispec.Descriptor{})
	if err := s.Abort(ctx, "abort"); err != nil {
		t.Fatalf("abort: %v", err)
	}
	if _, err := s.Status(ctx, "abort"); !errdefs.IsNotFound(err) {
		t.Errorf("status after abort: %v, want not found", err)
	}
	if err := s.Abort(ctx, "abort"); !errdefs.IsNotFound(err) {
		t.Errorf("second abort: %v, want not found", err)
	}
	// A new writer on the ref starts from nothing.
	w, err := s.Writer(ctx, content.WithRef("abort"))
	if err != nil {
		t.Fatalf("writer after abort: %v", err)
	}
	defer w.Close()
	if st, err := w.Status(); err != nil || st.Offset != 0 {
		t.Errorf("status of new writer: %+v, %v; want offset 0", st, err)
	}
}

func statusRefs(sts []content.Status) []string {
	var refs []string
	for _, st := range sts {
		refs = append(refs, st.Ref)
	}
	slices.Sort(refs)
	return refs
}

func contentListStatuses(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	exp := digest.FromString("x")
	writePartial(ctx, t, s, "pull-a/1", []byte("a1"), ocispec.Descriptor{})
	writePartial(ctx, t, s, "pull-a/2", []byte("a22"), ocispec.Descriptor{Size: 10, Digest: exp})
	writePartial(ctx, t, s, "pull-b/1", []byte("b"), ocispec.Descriptor{})
	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"pull-a/1", "pull-a/2", "pull-b/1"}},
		{[]string{`ref~=^pull-a/`}, []string{"pull-a/1", "pull-a/2"}},
		{[]string{`ref=="pull-b/1"`}, []string{"pull-b/1"}},
		{[]string{`ref==pull-b/1`, `ref==pull-a/1`}, []string{"pull-a/1", "pull-b/1"}},
		{[]string{`ref~=^pull-a/,expected==` + exp.String()}, []string{"pull-a/2"}},
		{[]string{`ref==none`}, nil},
	} {
		sts, err := s.ListStatuses(ctx, tc.filters...)
		if err != nil {
			t.Errorf("list statuses %q: %v", tc.filters, err)
			continue
		}
		if got := statusRefs(sts); !slices.Equal(got, tc.want) {
			t.Errorf("list statuses %q = %q, want %q", tc.filters, got, tc.want)
		}
	}
	if _, err := s.ListStatuses(ctx, "ref=="); !errdefs.IsInvalidArgument(err) {
		t.Errorf("list statuses with a bad filter: %v, want invalid argument", err)
	}
}

func contentUpdateLabels(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(6, 100)
	commitBlob(ctx, t, s, "labels", b, content.WithLabels(map[string]string{"a": "1", "b": "2"}))
	for _, tc := range []struct {
		name   string
		labels map[string]string
		paths  []string
		want   map[string]string
	}{
		{"SetOne", map[string]string{"a": "x", "b": "ignored"}, []string{"labels.a"}, map[string]string{"a": "x", "b": "2"}},
		{"RemoveOne", map[string]string{}, []string{"labels.b"}, map[string]string{"a": "x"}},
		{"AddDotted", map[string]string{"io.keel/gc.root": "y"}, []string{"labels.io.keel/gc.root"}, map[string]string{"a": "x", "io.keel/gc.root": "y"}},
		{"ReplaceAll", map[string]string{"c": "3"}, []string{"labels"}, map[string]string{"c": "3"}},
		{"NoPathsReplaceAll", map[string]string{"d": "4"}, nil, map[string]string{"d": "4"}},
		{"EmptyValueDeletes", map[string]string{"d": ""}, []string{"labels.d"}, nil},
		{"EmptyValueUnsetStaysUnset", map[string]string{"e": "", "f": "6"}, []string{"labels.e", "labels.f"}, map[string]string{"f": "6"}},
		{"ReplaceAllDropsEmpty", map[string]string{"g": "7", "h": ""}, []string{"labels"}, map[string]string{"g": "7"}},
		{"NoPathsDropsEmpty", map[string]string{"i": "", "j": "9"}, nil, map[string]string{"j": "9"}},
	} {
		got, err := s.Update(ctx, content.Info{Digest: b.desc.Digest, Labels: tc.labels}, tc.paths...)
		if err != nil {
			t.Errorf("%s: update: %v", tc.name, err)
			continue
		}
		if !mapsEqual(got.Labels, tc.want) {
			t.Errorf("%s: update returned labels %v, want %v", tc.name, got.Labels, tc.want)
		}
		info, err := s.Info(ctx, b.desc.Digest)
		if err != nil {
			t.Fatalf("%s: info: %v", tc.name, err)
		}
		if !mapsEqual(info.Labels, tc.want) {
			t.Errorf("%s: info labels %v, want %v", tc.name, info.Labels, tc.want)
		}
		if info.Size != b.desc.Size {
			t.Errorf("%s: update changed size to %d", tc.name, info.Size)
		}
	}
	if _, err := s.Update(ctx, content.Info{Digest: b.desc.Digest, Size: 1}, "size"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("update of size: %v, want invalid argument", err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func contentWalkFilters(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	layer, config, other := newBlob(7, 10), newBlob(8, 20), newBlob(9, 30)
	commitBlob(ctx, t, s, "walk-1", layer, content.WithLabels(map[string]string{"kind": "layer", "io.keel/x": "y"}))
	commitBlob(ctx, t, s, "walk-2", config, content.WithLabels(map[string]string{"kind": "config"}))
	commitBlob(ctx, t, s, "walk-3", other)
	name := map[digest.Digest]string{layer.desc.Digest: "layer", config.desc.Digest: "config", other.desc.Digest: "other"}
	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"config", "layer", "other"}},
		{[]string{"labels.kind==layer"}, []string{"layer"}},
		{[]string{`labels."io.keel/x"==y`}, []string{"layer"}},
		{[]string{"labels.kind"}, []string{"config", "layer"}},
		{[]string{"labels.kind!=layer"}, []string{"config", "other"}},
		{[]string{"labels.kind~=^con"}, []string{"config"}},
		{[]string{"labels.kind==layer", "size==30"}, []string{"layer", "other"}},
		{[]string{"digest==" + config.desc.Digest.String()}, []string{"config"}},
		{[]string{"labels.kind==layer,size==20"}, nil},
	} {
		var got []string
		err := s.Walk(ctx, func(info content.Info) error {
			n, ok := name[info.Digest]
			if !ok {
				return fmt.Errorf("walk found unknown blob %s", info.Digest)
			}
			got = append(got, n)
			return nil
		}, tc.filters...)
		if err != nil {
			t.Errorf("walk %q: %v", tc.filters, err)
			continue
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("walk %q = %q, want %q", tc.filters, got, tc.want)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Walk(ctx, func(content.Info) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("walk stopped by fn: %v after %d calls, want the fn's error after 1", err, calls)
	}
	if err := s.Walk(ctx, func(content.Info) error { return nil }, "labels.=="); !errdefs.IsInvalidArgument(err) {
		t.Errorf("walk with a bad filter: %v, want invalid argument", err)
	}
}

func contentDeleteBlob(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b, keep := newBlob(10, 1234), newBlob(11, 99)
	commitBlob(ctx, t, s, "delete", b, content.WithLabels(map[string]string{"a": "1"}))
	commitBlob(ctx, t, s, "keep", keep)
	if err := s.Delete(ctx, b.desc.Digest); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.Info(ctx, b.desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("info after delete: %v, want not found", err)
	}
	if _, err := s.ReaderAt(ctx, b.desc); !errdefs.IsNotFound(err) {
		t.Errorf("reader after delete: %v, want not found", err)
	}
	if err := s.Delete(ctx, b.desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("second delete: %v, want not found", err)
	}
	checkBlob(ctx, t, s, keep)
	// Written again, it comes back without the old labels.
	commitBlob(ctx, t, s, "delete-again", b)
	if info, err := s.Info(ctx, b.desc.Digest); err != nil || len(info.Labels) != 0 {
		t.Errorf("info after rewrite: %+v, %v; want no labels", info, err)
	}
}

func contentCommitExisting(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(12, 4096)
	commitBlob(ctx, t, s, "existing-1", b)
	// Without a descriptor the store learns of it only at commit.
	w, err := s.Writer(ctx, content.WithRef("existing-2"))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	defer w.Close()
	if _, err := w.Write(b.data); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("commit of a stored digest: %v, want already exists", err)
	}
	w.Close()
	if _, err := s.Status(ctx, "existing-2"); !errdefs.IsNotFound(err) {
		t.Errorf("ingest after commit of a stored digest: %v, want removed", err)
	}
	// With a descriptor it may say so at once; either way never a second copy.
	if w, err := s.Writer(ctx, content.WithRef("existing-3"), content.WithDescriptor(b.desc)); err == nil {
		w.Write(b.data)
		if err := w.Commit(ctx, b.desc.Size, b.desc.Digest); !errdefs.IsAlreadyExists(err) {
			t.Errorf("commit with descriptor of a stored digest: %v, want already exists", err)
		}
		w.Close()
	} else if !errdefs.IsAlreadyExists(err) {
		t.Errorf("writer with descriptor of a stored digest: %v, want already exists", err)
	}
	checkBlob(ctx, t, s, b)
}

// genReader yields n pseudo-random bytes from a seed, never holding them.
type genReader struct {
	rng *rand.ChaCha8
	n   int64
}

func newGenReader(seed uint64, n int64) *genReader {
	return &genReader{rng: rand.NewChaCha8(seedBytes(seed)), n: n}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	n, _ := g.rng.Read(p)
	g.n -= int64(n)
	return n, nil
}

func contentLargeBlob(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	const seed = 99
	dg := digest.Canonical.Digester()
	if _, err := io.Copy(dg.Hash(), newGenReader(seed, largeBlobSize)); err != nil {
		t.Fatalf("generate: %v", err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dg.Digest(), Size: largeBlobSize}
	if err := content.WriteBlob(ctx, s, "large", newGenReader(seed, largeBlobSize), desc); err != nil {
		t.Fatalf("write %d bytes: %v", largeBlobSize, err)
	}
	info, err := s.Info(ctx, desc.Digest)
	if err != nil || info.Size != largeBlobSize {
		t.Fatalf("info: %+v, %v; want size %d", info, err, largeBlobSize)
	}
	ra, err := s.ReaderAt(ctx, desc)
	if err != nil {
		t.Fatalf("reader: %v", err)
	}
	defer ra.Close()
	back := digest.Canonical.Digester()
	n, err := io.CopyBuffer(back.Hash(), content.NewReader(ra), make([]byte, sdk.ChunkSize))
	if err != nil || n != largeBlobSize {
		t.Fatalf("read back: %d bytes, %v", n, err)
	}
	if back.Digest() != desc.Digest {
		t.Fatalf("read back digest %s, want %s", back.Digest(), desc.Digest)
	}
}

func contentRestart(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	b, partial := newBlob(13, 3*sdk.ChunkSize/2), newBlob(14, sdk.ChunkSize+17)
	commitBlob(ctx, t, env.P, "restart-blob", b, content.WithLabels(map[string]string{"keep": "me"}))
	writePartial(ctx, t, env.P, "restart-ingest", partial.data[:1000], partial.desc)
	s, err := env.Reopen(ctx, t)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	info, err := s.Info(ctx, b.desc.Digest)
	if err != nil {
		t.Fatalf("info after restart: %v", err)
	}
	if info.Size != b.desc.Size || info.Labels["keep"] != "me" {
		t.Errorf("info after restart = %+v, want size %d label keep=me", info, b.desc.Size)
	}
	checkBlob(ctx, t, s, b)
	st, err := s.Status(ctx, "restart-ingest")
	if err != nil {
		t.Fatalf("status after restart: %v", err)
	}
	if st.Offset != 1000 || st.Total != partial.desc.Size || st.Expected != partial.desc.Digest {
		t.Errorf("status after restart = %+v, want offset 1000 total %d expected %s", st, partial.desc.Size, partial.desc.Digest)
	}
	if err := content.WriteBlob(ctx, s, "restart-ingest", bytes.NewReader(partial.data), partial.desc); err != nil {
		t.Fatalf("resume after restart: %v", err)
	}
	checkBlob(ctx, t, s, partial)
}

// contentBlobPath: a store that names its blob files names one holding
// exactly the blob, and a missing blob is NotFound.
func contentBlobPath(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	bp, ok := env.P.(content.BlobPather)
	if !ok {
		t.Fatalf("store announces %q but does not implement BlobPath", content.CapabilityBlobPath)
	}
	b := newBlob(13, 3<<20)
	commitBlob(ctx, t, env.P, "blob-path", b)
	path, err := bp.BlobPath(ctx, b.desc.Digest)
	if err != nil {
		t.Fatalf("blob path: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	got, err := digest.FromReader(f)
	if err != nil || got != b.desc.Digest {
		t.Errorf("file %s holds %s (%v), want %s", path, got, err, b.desc.Digest)
	}
	if _, err := bp.BlobPath(ctx, newBlob(14, 10).desc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("blob path of a missing blob: %v, want not found", err)
	}
}

// contentIngestFileHostDies: a host that dies while writing an ingest file
// (its stream cut, nothing closed) leaves an ingest that resumes at the
// last byte it put in the file, and the blob commits whole.
func contentIngestFileHostDies(ctx context.Context, t conformance.T, env *conformance.Env[content.Store]) {
	s := env.P
	b := newBlob(90, 3*sdk.ChunkSize+77)
	half := int64(len(b.data) / 2)
	hostCtx, die := context.WithCancel(ctx)
	w, err := s.Writer(hostCtx, content.WithRef("host-dies"), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer: %v", err)
	}
	if _, err := w.Write(b.data[:half]); err != nil {
		t.Fatalf("write: %v", err)
	}
	die()
	defer w.Close()
	w2, err := content.OpenWriter(ctx, s, content.WithRef("host-dies"), content.WithDescriptor(b.desc))
	if err != nil {
		t.Fatalf("writer after the host died: %v", err)
	}
	defer w2.Close()
	st, err := w2.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Offset != half {
		t.Fatalf("resumed at %d, want %d (every byte the host put in the file)", st.Offset, half)
	}
	if _, err := w2.Write(b.data[half:]); err != nil {
		t.Fatalf("write rest: %v", err)
	}
	if err := w2.Commit(ctx, b.desc.Size, b.desc.Digest); err != nil {
		t.Fatalf("commit: %v", err)
	}
	checkBlob(ctx, t, s, b)
}
