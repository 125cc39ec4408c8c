package metadata

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

// NewContentStore returns the namespaced view keeld serves over backend, the
// global content store. The namespace of each call comes from its context
// (namespaces.NamespaceRequired) and is made on first use.
//
// Each namespace records the digests it holds (size, labels, times); Info,
// Walk, Update and ReaderAt see only those. Ingest refs map to backend refs
// "<namespace>/<ref>", so the same ref in two namespaces never collides. A
// commit of a digest the backend already has still takes all the bytes and
// then records the digest in the namespace; it is AlreadyExists only when
// the namespace had it. Delete forgets the digest in the namespace and
// removes the blob from the backend once no namespace refers to it.
// Closing the view closes backend.
func NewContentStore(db *DB, backend content.Store) content.Store {
	s := &nsContent{db: db, backend: backend}
	db.register(func(r *backends) { r.content = s })
	return s
}

type nsContent struct {
	db      *DB
	backend content.Store
	// noBlobPath is set once the backend answered that it cannot name its
	// blob files, so reads stop asking.
	noBlobPath atomic.Bool
}

var (
	_ content.Store      = (*nsContent)(nil)
	_ content.BlobPather = (*nsContent)(nil)
)

// backendRef is the backend's name for ref in ns. Namespace names hold no
// '/', so the mapping is one to one.
func backendRef(ns, ref string) string { return ns + "/" + ref }

func readBlob(b *bolt.Bucket, dgst digest.Digest) (content.Info, bool) {
	if b == nil {
		return content.Info{}, false
	}
	bb := b.Bucket([]byte(dgst))
	if bb == nil {
		return content.Info{}, false
	}
	size, _ := binary.Varint(bb.Get(keySize))
	return content.Info{
		Digest:    dgst,
		Size:      size,
		CreatedAt: readTime(bb, keyCreatedAt),
		UpdatedAt: readTime(bb, keyUpdatedAt),
		Labels:    readLabels(bb),
	}, true
}

func writeBlob(b *bolt.Bucket, info content.Info) error {
	bb, err := b.CreateBucket([]byte(info.Digest))
	if err != nil {
		return err
	}
	if err := bb.Put(keySize, binary.AppendVarint(nil, info.Size)); err != nil {
		return err
	}
	if err := writeTime(bb, keyCreatedAt, info.CreatedAt); err != nil {
		return err
	}
	if err := writeTime(bb, keyUpdatedAt, info.UpdatedAt); err != nil {
		return err
	}
	return writeLabels(bb, info.Labels)
}

// checkDigest refuses a malformed digest with InvalidArgument.
func checkDigest(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("content %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

func blobNotFound(dgst digest.Digest) error {
	return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
}

func (s *nsContent) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return content.Info{}, err
	}
	if err := checkDigest(dgst); err != nil {
		return content.Info{}, err
	}
	var info content.Info
	err = s.db.view(func(tx *bolt.Tx) error {
		var ok bool
		if info, ok = readBlob(blobBucket(tx, ns), dgst); !ok {
			return blobNotFound(dgst)
		}
		return nil
	})
	return info, err
}

func (s *nsContent) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return content.Info{}, err
	}
	if err := checkDigest(info.Digest); err != nil {
		return content.Info{}, err
	}
	var out content.Info
	err = s.db.update(func(tx *bolt.Tx) error {
		b := blobBucket(tx, ns)
		cur, ok := readBlob(b, info.Digest)
		if !ok {
			return blobNotFound(info.Digest)
		}
		labels, err := updateLabels(cur.Labels, info.Labels, fieldpaths)
		if err != nil {
			return fmt.Errorf("content %s: %w", info.Digest, err)
		}
		if err := validateLabels(labels); err != nil {
			return fmt.Errorf("content %s: %w", info.Digest, err)
		}
		bb := b.Bucket([]byte(info.Digest))
		if err := writeLabels(bb, labels); err != nil {
			return err
		}
		if err := writeTime(bb, keyUpdatedAt, time.Now().UTC()); err != nil {
			return err
		}
		out, _ = readBlob(b, info.Digest)
		return nil
	})
	return out, err
}

func (s *nsContent) Walk(ctx context.Context, fn content.WalkFunc, fs ...string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	filter, err := filters.Parse(fs...)
	if err != nil {
		return err
	}
	var infos []content.Info
	if err := s.db.view(func(tx *bolt.Tx) error {
		b := blobBucket(tx, ns)
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			info, _ := readBlob(b, digest.Digest(k))
			if filters.Match(filter, content.AdaptInfo(info)) {
				infos = append(infos, info)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	// fn runs outside the transaction: it may call back into the store.
	for _, info := range infos {
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

func (s *nsContent) Delete(ctx context.Context, dgst digest.Digest) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := checkDigest(dgst); err != nil {
		return err
	}
	unlock := s.db.lockDigest(dgst)
	defer unlock()
	var referenced bool
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := blobBucket(tx, ns)
		if _, ok := readBlob(b, dgst); !ok {
			return blobNotFound(dgst)
		}
		if err := b.DeleteBucket([]byte(dgst)); err != nil {
			return err
		}
		referenced = blobReferenced(tx, dgst)
		return nil
	}); err != nil {
		return err
	}
	return s.release(ctx, dgst, referenced)
}

// blobReferenced reports whether any namespace still holds dgst.
func blobReferenced(tx *bolt.Tx, dgst digest.Digest) bool {
	v1 := tx.Bucket(bucketV1)
	if v1 == nil {
		return false
	}
	found := false
	v1.ForEachBucket(func(ns []byte) error {
		if b := blobBucket(tx, string(ns)); b != nil && b.Bucket([]byte(dgst)) != nil {
			found = true
		}
		return nil
	})
	return found
}

// release is the one place that decides whether a blob leaves the backend:
// when no namespace refers to it. The caller holds the digest's lock, so no
// commit records the digest between that decision and the backend delete.
func (s *nsContent) release(ctx context.Context, dgst digest.Digest, referenced bool) error {
	if referenced {
		return nil
	}
	if err := s.backend.Delete(ctx, dgst); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("content %s: %w", dgst, err)
	}
	return nil
}

func (s *nsContent) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	info, err := s.Info(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	if ra, ok := s.openBlobFile(ctx, info); ok {
		return ra, nil
	}
	return s.backend.ReaderAt(ctx, desc)
}

// BlobPath names the backend's file of a blob the namespace holds.
func (s *nsContent) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	if _, err := s.Info(ctx, dgst); err != nil {
		return "", err
	}
	return s.blobPath(ctx, dgst)
}

func (s *nsContent) blobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	bp, ok := s.backend.(content.BlobPather)
	if !ok || s.noBlobPath.Load() {
		return "", fmt.Errorf("blob path: %w", errdefs.ErrNotImplemented)
	}
	path, err := bp.BlobPath(ctx, dgst)
	if errdefs.IsNotImplemented(err) {
		s.noBlobPath.Store(true)
	}
	return path, err
}

// openBlobFile reads a committed blob from the backend's own file when the
// backend can name it: the bytes then skip the plugin's process and its
// connection. Any doubt (no capability, a file of the wrong size) falls back
// to reading through the plugin.
func (s *nsContent) openBlobFile(ctx context.Context, info content.Info) (content.ReaderAt, bool) {
	path, err := s.blobPath(ctx, info.Digest)
	if err != nil {
		return nil, false
	}
	ra, err := content.OpenFile(path)
	if err != nil {
		return nil, false
	}
	if ra.Size() != info.Size {
		ra.Close()
		return nil, false
	}
	return ra, true
}

// ingest is the record of an ingest: its backend ref, and the digest (the
// backend is not told it) and size the last writer said to expect.
type ingest struct {
	bref     string
	expected digest.Digest
	total    int64
}

func readIngest(b *bolt.Bucket) ingest {
	total, _ := binary.Varint(b.Get(keySize))
	return ingest{bref: string(b.Get(keyRef)), expected: digest.Digest(b.Get(keyExpected)), total: total}
}

// status completes a backend status with the namespace's ref and expected
// digest.
func (in ingest) status(ref string, st content.Status) content.Status {
	st.Ref = ref
	if st.Expected == "" {
		st.Expected = in.expected
	}
	return st
}

// ingestRecord returns the record of the namespace's ingest ref.
func (s *nsContent) ingestRecord(ns, ref string) (ingest, error) {
	var in ingest
	err := s.db.view(func(tx *bolt.Tx) error {
		b := ingestsBucket(tx, ns)
		if b == nil || b.Bucket([]byte(ref)) == nil {
			return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
		}
		in = readIngest(b.Bucket([]byte(ref)))
		return nil
	})
	return in, err
}

func (s *nsContent) Status(ctx context.Context, ref string) (content.Status, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return content.Status{}, err
	}
	in, err := s.ingestRecord(ns, ref)
	if err != nil {
		return content.Status{}, err
	}
	st, err := s.backend.Status(ctx, in.bref)
	if err != nil {
		return content.Status{}, fmt.Errorf("ingest %q: %w", ref, err)
	}
	return in.status(ref, st), nil
}

func (s *nsContent) ListStatuses(ctx context.Context, fs ...string) ([]content.Status, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	filter, err := filters.Parse(fs...)
	if err != nil {
		return nil, err
	}
	refs := map[string]ingest{}
	if err := s.db.view(func(tx *bolt.Tx) error {
		b := ingestsBucket(tx, ns)
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			refs[string(k)] = readIngest(b.Bucket(k))
			return nil
		})
	}); err != nil {
		return nil, err
	}
	var out []content.Status
	for ref, in := range refs {
		st, err := s.backend.Status(ctx, in.bref)
		if errdefs.IsNotFound(err) {
			continue // the record outlived its ingest (a crash); Abort clears it
		}
		if err != nil {
			return nil, fmt.Errorf("ingest %q: %w", ref, err)
		}
		st = in.status(ref, st)
		if filters.Match(filter, content.AdaptStatus(st)) {
			out = append(out, st)
		}
	}
	return out, nil
}

func (s *nsContent) Abort(ctx context.Context, ref string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	in, err := s.ingestRecord(ns, ref)
	if err != nil {
		return err
	}
	berr := s.backend.Abort(ctx, in.bref)
	if berr != nil && !errdefs.IsNotFound(berr) {
		return fmt.Errorf("ingest %q: %w", ref, berr)
	}
	if err := s.db.update(func(tx *bolt.Tx) error { return dropIngest(tx, ns, ref) }); err != nil {
		return err
	}
	if berr != nil {
		return fmt.Errorf("ingest %q: %w", ref, berr)
	}
	return nil
}

func dropIngest(tx *bolt.Tx, ns, ref string) error {
	b := ingestsBucket(tx, ns)
	if b == nil || b.Bucket([]byte(ref)) == nil {
		return nil
	}
	return b.DeleteBucket([]byte(ref))
}

func (s *nsContent) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	wo, err := content.ApplyWriterOpts(opts...)
	if err != nil {
		return nil, err
	}
	if err := s.alreadyHeld(ctx, ns, wo.Desc.Digest); err != nil {
		return nil, err
	}
	// The backend is not told the digest: it may hold the blob for another
	// namespace, and this namespace must still send every byte.
	desc := wo.Desc
	desc.Digest = ""
	bref := backendRef(ns, wo.Ref)
	// From here until Close the collector sees the ingest as being written.
	done := s.db.writing(bref)
	w, err := s.backend.Writer(ctx, content.WithRef(bref), content.WithDescriptor(desc))
	if err != nil {
		done()
		return nil, fmt.Errorf("ingest %q: %w", wo.Ref, err)
	}
	// A writer that waited for another one of the same blob finds the
	// blob it committed.
	if err := s.alreadyHeld(ctx, ns, wo.Desc.Digest); err != nil {
		w.Close()
		done()
		return nil, err
	}
	var (
		in    ingest
		reset bool
	)
	if err := s.db.update(func(tx *bolt.Tx) error {
		b, err := createContentBucket(tx, ns, bucketIngests)
		if err != nil {
			return err
		}
		ib, err := b.CreateBucketIfNotExists([]byte(wo.Ref))
		if err != nil {
			return err
		}
		// Bytes written for another digest or size than the one asked
		// for now are not this blob's: never resume them.
		old := readIngest(ib)
		reset = (wo.Desc.Digest != "" && old.expected != "" && old.expected != wo.Desc.Digest) ||
			(wo.Desc.Size > 0 && old.total > 0 && old.total != wo.Desc.Size)
		if err := ib.Put(keyRef, []byte(bref)); err != nil {
			return err
		}
		if wo.Desc.Digest != "" {
			if err := ib.Put(keyExpected, []byte(wo.Desc.Digest)); err != nil {
				return err
			}
		}
		if wo.Desc.Size > 0 {
			if err := ib.Put(keySize, binary.AppendVarint(nil, wo.Desc.Size)); err != nil {
				return err
			}
		}
		if err := attachToLease(ctx, tx, ns, LeaseResource{ID: wo.Ref, Type: ResourceIngests}); err != nil {
			return err
		}
		in = readIngest(ib)
		return nil
	}); err != nil {
		w.Close()
		done()
		return nil, err
	}
	if reset {
		if err := w.Truncate(0); err != nil {
			w.Close()
			done()
			return nil, fmt.Errorf("ingest %q: reset for another blob: %w", wo.Ref, err)
		}
	}
	lease, _ := scope.Lease(ctx)
	return &nsWriter{Writer: w, s: s, ns: ns, ref: wo.Ref, in: in, lease: lease, done: done}, nil
}

// alreadyHeld is AlreadyExists when the namespace holds dgst (which a
// lease in ctx then takes too, so the caller's work is not collected
// under it), nil when it does not or dgst is empty.
func (s *nsContent) alreadyHeld(ctx context.Context, ns string, dgst digest.Digest) error {
	if dgst == "" {
		return nil
	}
	// Looked up and leased in one transaction: a collection that swept
	// the blob between the two would leave a lease on nothing and a
	// caller trusting a blob about to leave the backend (a pull right
	// after an image's removal).
	held := false
	if err := s.db.update(func(tx *bolt.Tx) error {
		if _, held = readBlob(blobBucket(tx, ns), dgst); !held {
			return nil
		}
		return attachToLease(ctx, tx, ns, LeaseResource{ID: dgst.String(), Type: ResourceContent})
	}); err != nil {
		return err
	}
	if !held {
		return nil
	}
	return fmt.Errorf("content %s: %w", dgst, errdefs.ErrAlreadyExists)
}

type nsWriter struct {
	content.Writer
	s   *nsContent
	ns  string
	ref string
	in  ingest
	// lease is the lease the writer was opened under; Commit's own
	// context may name another.
	lease string
	// done ends the writer's mark as being written (see DB.writing).
	done func()
}

// Unwrap is the backend's writer (content.AsIngestFile).
func (w *nsWriter) Unwrap() content.Writer { return w.Writer }

func (w *nsWriter) Close() error {
	err := w.Writer.Close()
	w.done()
	return err
}

func (w *nsWriter) Status() (content.Status, error) {
	st, err := w.Writer.Status()
	return w.in.status(w.ref, st), err
}

func (w *nsWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	base, err := content.ApplyOpts(opts...)
	if err != nil {
		return err
	}
	if err := validateLabels(base.Labels); err != nil {
		return fmt.Errorf("ingest %q: %w", w.ref, err)
	}
	dgst := expected
	if dgst == "" {
		dgst = w.Digest()
	}
	unlock := w.s.db.lockDigest(dgst)
	defer unlock()
	if err := w.Writer.Commit(ctx, size, expected); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return err
		}
		// The backend had the blob already (for another namespace): all
		// bytes were sent, record it here.
	}
	info, err := w.s.backend.Info(ctx, dgst)
	if err != nil {
		return fmt.Errorf("content %s: after commit: %w", dgst, err)
	}
	if _, ok := scope.Lease(ctx); !ok && w.lease != "" {
		ctx = scope.WithLease(ctx, w.lease)
	}
	now := time.Now().UTC()
	held := false
	err = w.s.db.update(func(tx *bolt.Tx) error {
		if err := attachToLease(ctx, tx, w.ns, LeaseResource{ID: dgst.String(), Type: ResourceContent}); err != nil {
			return err
		}
		if err := dropIngest(tx, w.ns, w.ref); err != nil {
			return err
		}
		b, err := createContentBucket(tx, w.ns, bucketBlob)
		if err != nil {
			return err
		}
		// The namespace holds the blob already: the ingest is spent all
		// the same, so its record goes (in this transaction, which an
		// error would roll back) and the caller is told.
		if held = b.Bucket([]byte(dgst)) != nil; held {
			return nil
		}
		return writeBlob(b, content.Info{Digest: dgst, Size: info.Size, CreatedAt: now, UpdatedAt: now, Labels: base.Labels})
	})
	if err == nil && held {
		err = fmt.Errorf("content %s: %w", dgst, errdefs.ErrAlreadyExists)
	}
	return err
}

func (s *nsContent) Close() error { return s.backend.Close() }

// digestLocks serialises, per digest, a commit's backend call and record
// against a delete's record removal and backend delete.
type digestLocks struct {
	mu    sync.Mutex
	locks map[digest.Digest]*digestLock
}

type digestLock struct {
	mu   sync.Mutex
	refs int
}

func (db *DB) lockDigest(dgst digest.Digest) (unlock func()) {
	l := &db.digestLocks
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[digest.Digest]*digestLock{}
	}
	dl := l.locks[dgst]
	if dl == nil {
		dl = &digestLock{}
		l.locks[dgst] = dl
	}
	dl.refs++
	l.mu.Unlock()
	dl.mu.Lock()
	return func() {
		dl.mu.Unlock()
		l.mu.Lock()
		if dl.refs--; dl.refs == 0 {
			delete(l.locks, dgst)
		}
		l.mu.Unlock()
	}
}
