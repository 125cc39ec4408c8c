// Package content is the content store plugin contract, in containerd's
// model.
//
// A blob is an immutable byte sequence addressed by its digest
// (go-digest, "sha256:<hex>"). Blobs enter the store through an ingest: a
// named, resumable upload. Writer opens (or resumes) the ingest named by a
// ref; the bytes written so far survive the writer, a crash and a restart,
// so a new writer on the same ref continues at Status().Offset. Commit
// verifies the size and digest and moves the data under its digest; the
// ingest is then gone. Only one writer holds a ref at a time.
//
//	w, _ := store.Writer(ctx, content.WithRef("pull-layer-1"), content.WithDescriptor(desc))
//	st, _ := w.Status()         // st.Offset: bytes already there
//	// write from st.Offset on
//	err := w.Commit(ctx, desc.Size, desc.Digest)
//	w.Close()
//
// WriteBlob does exactly that, resuming and treating AlreadyExists as
// success. Callers take the narrowest interface: unpack needs a Provider,
// a fetch an Ingester, GC a Manager.
//
// # Errors
//
// A missing blob or ingest is NotFound. A ref held by another writer is
// Unavailable ("ref ... locked"). A Commit whose size or digest does not
// match the data is FailedPrecondition, and the ingest is kept so the caller
// can look at it, truncate it or abort it. A Commit of a digest the store
// already holds is AlreadyExists, and the ingest is removed. A bad digest,
// ref or filter is InvalidArgument.
//
// # Filters
//
// Walk filters see the fields digest, size and labels.<key>; ListStatuses
// filters see ref, expected, offset and total. Both use containerd's filter
// syntax (sdk/filters): labels."io.keel/x"==v,size==3 means "and", separate
// filters mean "or".
package content

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

// Info describes a committed blob.
type Info struct {
	Digest    digest.Digest
	Size      int64
	CreatedAt time.Time
	UpdatedAt time.Time
	Labels    map[string]string
}

// Status describes an ingest in progress.
type Status struct {
	Ref       string
	Offset    int64         // bytes written so far
	Total     int64         // expected size, 0 when unknown
	Expected  digest.Digest // expected digest, empty when unknown
	StartedAt time.Time
	UpdatedAt time.Time
}

// WalkFunc is called for each blob Walk visits; an error stops the walk and
// is returned by Walk.
type WalkFunc func(Info) error

// Provider gives read access to committed blobs.
type Provider interface {
	// ReaderAt opens the blob desc.Digest names; NotFound when absent. Only
	// the digest of desc is used.
	ReaderAt(ctx context.Context, desc ocispec.Descriptor) (ReaderAt, error)
}

// ReaderAt reads a committed blob at any offset.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Ingester opens ingests.
type Ingester interface {
	// Writer opens the ingest named by WithRef (InvalidArgument without
	// one), making it when absent. Unavailable when another writer holds
	// it (OpenWriter waits instead); AlreadyExists when WithDescriptor
	// names a digest already stored. An ingest written for another size
	// or digest than WithDescriptor now names starts again at 0: its
	// bytes are not this blob's.
	Writer(ctx context.Context, opts ...WriterOpt) (Writer, error)
}

// Writer writes one ingest. Writes append at Status().Offset. Close releases
// the ref without committing; the data stays for a later writer.
type Writer interface {
	io.WriteCloser
	// Digest is the digest of the data written so far.
	Digest() digest.Digest
	// Commit checks the data against size and expected (each falling back
	// to what WithDescriptor gave, and skipped when still zero) and stores
	// it under its digest, with the labels opts set.
	// FailedPrecondition on a mismatch (the ingest is kept); AlreadyExists
	// when the blob is already there (the ingest is removed).
	Commit(ctx context.Context, size int64, expected digest.Digest, opts ...Opt) error
	// Status of the ingest.
	Status() (Status, error)
	// Truncate cuts the ingest to size bytes (only 0 need be supported), so
	// a bad resume can start over.
	Truncate(size int64) error
}

// Manager manages committed blobs.
type Manager interface {
	// Info of the blob dgst names; NotFound when absent.
	Info(ctx context.Context, dgst digest.Digest) (Info, error)
	// Update changes the labels of the blob info.Digest names. fieldpaths
	// are "labels" (replace all) or "labels.<key>" (set or, when absent from
	// info.Labels, remove one); none means all labels. Other paths are
	// InvalidArgument.
	Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error)
	// Walk calls fn for each blob matching any of the filters (all blobs
	// with none).
	Walk(ctx context.Context, fn WalkFunc, filters ...string) error
	// Delete removes a blob; NotFound when absent.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// IngestManager manages ingests in progress.
type IngestManager interface {
	// Status of the ingest ref names; NotFound when absent.
	Status(ctx context.Context, ref string) (Status, error)
	// ListStatuses lists the ingests matching any of the filters.
	ListStatuses(ctx context.Context, filters ...string) ([]Status, error)
	// Abort removes an ingest; NotFound when absent, Unavailable while a
	// writer holds it.
	Abort(ctx context.Context, ref string) error
}

// Store is the content plugin kind.
type Store interface {
	Manager
	Provider
	IngestManager
	Ingester
	// Close releases the store.
	Close() error
}

// BlobPather is a store that can name the read-only file holding a committed
// blob (capability "blob-path"), so that a host on the same machine reads
// the file itself: layer bytes then cross no process boundary on their way
// out of the store. The file must stay whole while the blob exists, and the
// host must not write to it.
type BlobPather interface {
	BlobPath(ctx context.Context, dgst digest.Digest) (string, error)
}

// CapabilityBlobPath is announced by stores that implement BlobPather.
const CapabilityBlobPath = "blob-path"

// IngestPather is a store that can name the file an open ingest's bytes go
// to (capability "ingest-path"), so that a host on the same machine writes
// them itself: they then cross no process boundary on their way into the
// store, and the store hashes each byte once. The file must lie beneath
// the store's root and be a regular file of its own (one link).
//
// From the call on, w's data is whatever is in the file: the host writes
// at offsets from Status().Offset on, and the store takes in what it finds
// there at w's next Status, Digest, Write, Truncate, Commit or Close. So
// after a crash of the host the bytes it wrote are resumable like any
// others; Commit still checks size and digest.
type IngestPather interface {
	IngestPath(ctx context.Context, w Writer) (string, error)
}

// CapabilityIngestPath is announced by stores that implement IngestPather.
const CapabilityIngestPath = "ingest-path"

// IngestFile is a Writer that puts its bytes into the store's ingest file
// (a client made WithIngestFiles, of a store with the capability
// "ingest-path"). Another process of the host may write them there
// instead: at Path, in order, from Status().Offset on; the host reports
// how far each write reached with Wrote, which has the store take the
// bytes in as Write would. ReadAt reads back what is in the file.
type IngestFile interface {
	Writer
	io.ReaderAt
	Path() string
	Wrote(offset int64) error
}

// AsIngestFile returns the IngestFile behind w, looking through writers
// that wrap another (an Unwrap() Writer method), if w writes into one.
func AsIngestFile(w Writer) (IngestFile, bool) {
	for w != nil {
		if f, ok := w.(IngestFile); ok && f.Path() != "" {
			return f, true
		}
		u, ok := w.(interface{ Unwrap() Writer })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	return nil, false
}

// Opt changes the Info of a blob being committed.
type Opt func(*Info) error

// WithLabels sets labels on a blob being committed.
func WithLabels(labels map[string]string) Opt {
	return func(info *Info) error {
		if info.Labels == nil {
			info.Labels = map[string]string{}
		}
		for k, v := range labels {
			info.Labels[k] = v
		}
		return nil
	}
}

// ApplyOpts builds the Info that opts describe.
func ApplyOpts(opts ...Opt) (Info, error) {
	var info Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// WriterOpts are what Writer's options set.
type WriterOpts struct {
	Ref  string
	Desc ocispec.Descriptor // Size and Digest, when known, are the expected ones
}

// WriterOpt sets a WriterOpts field.
type WriterOpt func(*WriterOpts) error

// WithRef names the ingest.
func WithRef(ref string) WriterOpt {
	return func(o *WriterOpts) error {
		o.Ref = ref
		return nil
	}
}

// WithDescriptor gives the expected size and digest of the blob.
func WithDescriptor(desc ocispec.Descriptor) WriterOpt {
	return func(o *WriterOpts) error {
		o.Desc = desc
		return nil
	}
}

// ApplyWriterOpts builds the WriterOpts that opts describe, checking that a
// ref is given and that an expected digest is well formed.
func ApplyWriterOpts(opts ...WriterOpt) (WriterOpts, error) {
	var wo WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return WriterOpts{}, err
		}
	}
	if wo.Ref == "" {
		return WriterOpts{}, fmt.Errorf("writer: ref required: %w", errdefs.ErrInvalidArgument)
	}
	if wo.Desc.Digest != "" {
		if err := wo.Desc.Digest.Validate(); err != nil {
			return WriterOpts{}, fmt.Errorf("writer %q: expected digest %q: %v: %w", wo.Ref, wo.Desc.Digest, err, errdefs.ErrInvalidArgument)
		}
	}
	if wo.Desc.Size < 0 {
		return WriterOpts{}, fmt.Errorf("writer %q: negative size: %w", wo.Ref, errdefs.ErrInvalidArgument)
	}
	return wo, nil
}

// AdaptInfo exposes an Info to Walk filters: digest, size (keel's; not in
// containerd), labels.<key> (labels.a.b is the label "a.b").
func AdaptInfo(info Info) filters.Adaptor {
	return filters.AdaptorFunc(func(path []string) (string, bool) {
		switch {
		case len(path) == 1 && path[0] == "digest":
			return info.Digest.String(), true
		case len(path) == 1 && path[0] == "size":
			return strconv.FormatInt(info.Size, 10), true
		case len(path) >= 1 && path[0] == "labels":
			return filters.MapField(info.Labels, path[1:])
		}
		return "", false
	})
}

// AdaptStatus exposes a Status to ListStatuses filters: ref, expected,
// offset, total.
func AdaptStatus(st Status) filters.Adaptor {
	return filters.AdaptorFunc(func(path []string) (string, bool) {
		if len(path) != 1 {
			return "", false
		}
		switch path[0] {
		case "ref":
			return st.Ref, true
		case "expected":
			return st.Expected.String(), st.Expected != ""
		case "offset":
			return strconv.FormatInt(st.Offset, 10), true
		case "total":
			return strconv.FormatInt(st.Total, 10), true
		}
		return "", false
	})
}
