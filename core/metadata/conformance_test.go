package metadata_test

// The conformance suites run against keeld's namespaced views, as containerd
// runs its snapshotter suite against its metadata wrapper: the backends are
// the native snapshotter and content-local, served in process over gRPC.
// Importing plugin packages is fine here, in test code only.

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/plugins/content-local/local"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/contenttest"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// suiteNamespace is the namespace the suites' calls run in; the suites know
// nothing of namespaces, as a plugin does not.
const suiteNamespace = "conformance"

func withNS(ctx context.Context) context.Context {
	return scope.WithNamespace(ctx, suiteNamespace)
}

func openDB(root string) (*metadata.DB, error) {
	return metadata.Open(filepath.Join(root, "meta.db"), metadata.Options{NoSync: true})
}

func TestSnapshotterConformance(t *testing.T) {
	backend := snapshottest.InProcess(native.New)
	snapshottest.Run(conformance.Go(t), func(ctx context.Context, ct conformance.T, root string) (snapshot.Snapshotter, error) {
		b, err := backend(ctx, ct, filepath.Join(root, "native"))
		if err != nil {
			return nil, err
		}
		db, err := openDB(root)
		if err != nil {
			b.Close()
			return nil, err
		}
		return &nsSnapshotter{s: metadata.NewSnapshotter(db, "native", b), db: db}, nil
	})
}

func TestContentConformance(t *testing.T) {
	backend := contenttest.InProcess(local.New)
	contenttest.Run(conformance.Go(t), func(ctx context.Context, ct conformance.T, root string) (content.Store, error) {
		return keeldStore(ctx, ct, backend, root)
	})
}

// TestContentConformanceTwoHops runs the content suite the way a client
// reaches content through keeld: over gRPC to keeld's namespaced store,
// which reaches content-local over gRPC, both streams pipelined.
func TestContentConformanceTwoHops(t *testing.T) {
	backend := contenttest.InProcess(local.New)
	contenttest.Run(conformance.Go(t), func(ctx context.Context, ct conformance.T, root string) (content.Store, error) {
		front := contenttest.InProcess(func(ctx context.Context, _ sdk.Env) (content.Store, error) {
			return keeldStore(ctx, ct, backend, root)
		})
		return front(ctx, ct, filepath.Join(root, "keeld"))
	}, conformance.WithRun(regexp.MustCompile(`^(WriteReadBack|ResumeIngest|WriterStatusAfterWrite|ReopenedIngestKeepsUpdatedAt|TruncateIngest|UpdateLabels|EmptyLabelNotStored|ListStatusesFilters|WalkFilters)$`)))
}

// nsSnapshotter puts every call in suiteNamespace and closes the DB with
// the view.
type nsSnapshotter struct {
	s  snapshot.Snapshotter
	db *metadata.DB
}

var (
	_ snapshot.Snapshotter = (*nsSnapshotter)(nil)
	_ snapshot.Cleaner     = (*nsSnapshotter)(nil)
)

func (n *nsSnapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	return n.s.Stat(withNS(ctx), key)
}
func (n *nsSnapshotter) Update(ctx context.Context, info snapshot.Info, fieldpaths ...string) (snapshot.Info, error) {
	return n.s.Update(withNS(ctx), info, fieldpaths...)
}
func (n *nsSnapshotter) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	return n.s.Usage(withNS(ctx), key)
}
func (n *nsSnapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return n.s.Mounts(withNS(ctx), key)
}
func (n *nsSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return n.s.Prepare(withNS(ctx), key, parent, opts...)
}
func (n *nsSnapshotter) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return n.s.View(withNS(ctx), key, parent, opts...)
}
func (n *nsSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	return n.s.Commit(withNS(ctx), name, key, opts...)
}
func (n *nsSnapshotter) Remove(ctx context.Context, key string) error {
	return n.s.Remove(withNS(ctx), key)
}
func (n *nsSnapshotter) Walk(ctx context.Context, fn snapshot.WalkFunc, filters ...string) error {
	return n.s.Walk(withNS(ctx), fn, filters...)
}
func (n *nsSnapshotter) Cleanup(ctx context.Context) error {
	return n.s.(snapshot.Cleaner).Cleanup(withNS(ctx))
}
func (n *nsSnapshotter) Close() error {
	err := n.s.Close()
	if derr := n.db.Close(); err == nil {
		err = derr
	}
	return err
}

// nsStore puts every call in suiteNamespace and closes the DB with the view.
type nsStore struct {
	s  content.Store
	db *metadata.DB
}

var _ content.Store = (*nsStore)(nil)

func (n *nsStore) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	return n.s.Info(withNS(ctx), dgst)
}
func (n *nsStore) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	return n.s.Update(withNS(ctx), info, fieldpaths...)
}
func (n *nsStore) Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error {
	return n.s.Walk(withNS(ctx), fn, filters...)
}
func (n *nsStore) Delete(ctx context.Context, dgst digest.Digest) error {
	return n.s.Delete(withNS(ctx), dgst)
}
func (n *nsStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return n.s.ReaderAt(withNS(ctx), desc)
}
func (n *nsStore) Status(ctx context.Context, ref string) (content.Status, error) {
	return n.s.Status(withNS(ctx), ref)
}
func (n *nsStore) ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error) {
	return n.s.ListStatuses(withNS(ctx), filters...)
}
func (n *nsStore) Abort(ctx context.Context, ref string) error {
	return n.s.Abort(withNS(ctx), ref)
}
func (n *nsStore) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	return n.s.(content.BlobPather).BlobPath(withNS(ctx), dgst)
}
func (n *nsStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	w, err := n.s.Writer(withNS(ctx), opts...)
	if err != nil {
		return nil, err
	}
	return nsWriter{w}, nil
}
func (n *nsStore) Close() error {
	err := n.s.Close()
	if derr := n.db.Close(); err == nil {
		err = derr
	}
	return err
}

type nsWriter struct{ content.Writer }

func (w nsWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	return w.Writer.Commit(withNS(ctx), size, expected, opts...)
}

// keeldStore is keeld's namespaced content store over a content-local
// opened by backend under root, as keeld serves content.
func keeldStore(ctx context.Context, ct conformance.T, backend conformance.Opener[content.Store], root string) (content.Store, error) {
	b, err := backend(ctx, ct, filepath.Join(root, "local"))
	if err != nil {
		return nil, err
	}
	db, err := openDB(root)
	if err != nil {
		b.Close()
		return nil, err
	}
	return &nsStore{s: metadata.NewContentStore(db, b), db: db}, nil
}
