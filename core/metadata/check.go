package metadata

import (
	"context"
	"fmt"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// What keel check (core/check) reads of the records across namespaces, and
// the repairs it may make. Each repair keeps the rules of the package doc:
// metadata first, then the plugin, and under the digest lock for content.

// Backends returns the plugins behind the registered views (NewContentStore,
// NewSnapshotter): content is nil when none is registered.
func (db *DB) Backends() (content.Store, map[string]snapshot.Snapshotter) {
	c, sns := db.registered()
	out := make(map[string]snapshot.Snapshotter, len(sns))
	for name, s := range sns {
		out[name] = s.backend
	}
	if c == nil {
		return nil, out
	}
	return c.backend, out
}

// SnapshotRecord is one snapshot record of a snapshotter.
type SnapshotRecord struct {
	Namespace string
	Key       string
	// ID is the backend key.
	ID     string
	Kind   snapshot.Kind
	Parent string
	// Pending records are being created (or were, when a crash left them).
	Pending bool
	// CommitFrom is, for a pending commit, the active key it commits.
	CommitFrom string
}

// SnapshotRecords returns the records of snapshotter in every namespace,
// ordered by namespace and key.
func (db *DB) SnapshotRecords(snapshotter string) ([]SnapshotRecord, error) {
	var out []SnapshotRecord
	err := db.view(func(tx *bolt.Tx) error {
		return forEachNamespace(tx, func(ns string) error {
			b := snapshotsBucket(tx, ns, snapshotter)
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				r, _ := readSnap(b, string(k))
				out = append(out, SnapshotRecord{Namespace: ns, Key: r.key, ID: r.id, Kind: r.kind,
					Parent: r.parent, Pending: r.pending, CommitFrom: r.commitFrom})
				return nil
			})
		})
	})
	return out, err
}

func forEachNamespace(tx *bolt.Tx, fn func(ns string) error) error {
	v1 := tx.Bucket(bucketV1)
	if v1 == nil {
		return nil
	}
	return v1.ForEachBucket(func(ns []byte) error { return fn(string(ns)) })
}

// DropSnapshotRecord removes the record of a snapshot its plugin no longer
// has, when nothing refers to it: no child record, no container, no commit
// in flight. FailedPrecondition names what refers to it; NotFound when the
// record is gone.
func (db *DB) DropSnapshotRecord(ns, snapshotter, key string) error {
	return db.update(func(tx *bolt.Tx) error {
		b := snapshotsBucket(tx, ns, snapshotter)
		r, ok := readSnap(b, key)
		if b == nil || !ok {
			return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
		}
		if r.pending {
			return fmt.Errorf("snapshot %q is being created: %w", key, errdefs.ErrFailedPrecondition)
		}
		if cb := b.Bucket([]byte(key)).Bucket(bucketChildren); cb != nil {
			if k, _ := cb.Cursor().First(); k != nil {
				return fmt.Errorf("snapshot %q has child %q: %w", key, k, errdefs.ErrFailedPrecondition)
			}
		}
		var using string
		b.ForEachBucket(func(k []byte) error {
			if o, _ := readSnap(b, string(k)); o.pending && o.commitFrom == key {
				using = "commit " + o.key
			}
			return nil
		})
		if cs := containersBucket(tx, ns); cs != nil {
			cs.ForEachBucket(func(k []byte) error {
				c, _ := readContainer(cs, string(k))
				if c.Snapshotter == snapshotter && c.SnapshotKey == key {
					using = "container " + c.ID
				}
				return nil
			})
		}
		if using != "" {
			return fmt.Errorf("snapshot %q is used by %s: %w", key, using, errdefs.ErrFailedPrecondition)
		}
		return deleteSnap(b, r)
	})
}

// RemoveOrphanSnapshots removes the snapshots of the registered snapshotter
// name that no record refers to, children first, as garbage collection
// does; it returns their backend keys.
func (db *DB) RemoveOrphanSnapshots(ctx context.Context, name string) ([]string, error) {
	_, sns := db.registered()
	s, ok := sns[name]
	if !ok {
		return nil, fmt.Errorf("snapshotter %q is not registered: %w", name, errdefs.ErrNotFound)
	}
	return s.removeOrphans(ctx, false)
}

// SettleSnapshotRemovals waits until the plugins of the registered
// snapshotters have been asked to remove every snapshot whose record a
// Remove deleted so far (they do so in the background), or ctx ends: what
// a check of the plugins against the records, or a stop, waits for.
func (db *DB) SettleSnapshotRemovals(ctx context.Context) error {
	_, sns := db.registered()
	for _, s := range sns {
		if err := s.removals.settle(ctx); err != nil {
			return err
		}
	}
	return nil
}

// BlobRecords returns the namespaces that record each digest.
func (db *DB) BlobRecords() (map[digest.Digest][]string, error) {
	out := map[digest.Digest][]string{}
	err := db.view(func(tx *bolt.Tx) error {
		return forEachNamespace(tx, func(ns string) error {
			if b := blobBucket(tx, ns); b != nil {
				return b.ForEachBucket(func(k []byte) error {
					out[digest.Digest(k)] = append(out[digest.Digest(k)], ns)
					return nil
				})
			}
			return nil
		})
	})
	return out, err
}

// DropBlob forgets dgst in every namespace, then deletes it from the
// content plugin (NotFound there is fine): for a blob whose bytes are
// wrong, or that the plugin lost. A later pull fetches it again.
func (db *DB) DropBlob(ctx context.Context, dgst digest.Digest) error {
	c, _ := db.registered()
	if c == nil {
		return fmt.Errorf("no content store is registered: %w", errdefs.ErrNotFound)
	}
	unlock := db.lockDigest(dgst)
	defer unlock()
	if err := db.update(func(tx *bolt.Tx) error {
		return forEachNamespace(tx, func(ns string) error {
			if b := blobBucket(tx, ns); b != nil && b.Bucket([]byte(dgst)) != nil {
				return b.DeleteBucket([]byte(dgst))
			}
			return nil
		})
	}); err != nil {
		return err
	}
	return c.release(ctx, dgst, false)
}

// RemoveOrphanBlob deletes dgst from the content plugin when no namespace
// records it, as garbage collection does (checked again under the digest
// lock, so a commit recording it meanwhile keeps it).
func (db *DB) RemoveOrphanBlob(ctx context.Context, dgst digest.Digest) error {
	c, _ := db.registered()
	if c == nil {
		return fmt.Errorf("no content store is registered: %w", errdefs.ErrNotFound)
	}
	info, err := c.backend.Info(ctx, dgst)
	if err != nil {
		return err
	}
	return c.collectBlob(ctx, info, false, nil, &gc.Report{})
}

// IngestRecord is one ingest record, with the leases that hold it.
type IngestRecord struct {
	Namespace string
	Ref       string
	// BackendRef is the content plugin's ref of the ingest.
	BackendRef string
	// Leases are the leases of the namespace that list the ref and are
	// unexpired (or held by an operation of this process).
	Leases []string
}

// IngestRecords returns the ingest records of every namespace at now,
// ordered by namespace and ref.
func (db *DB) IngestRecords(now time.Time) ([]IngestRecord, error) {
	held := db.heldLeases()
	var out []IngestRecord
	err := db.view(func(tx *bolt.Tx) error {
		return forEachNamespace(tx, func(ns string) error {
			holders := map[string][]string{}
			if lb := leasesBucket(tx, ns); lb != nil {
				lb.ForEachBucket(func(k []byte) error {
					l, _ := readLease(lb, string(k))
					if gc.Expired(l.Labels, now) && !held[leaseKey{ns, l.ID}] {
						return nil
					}
					for _, r := range leaseResources(lb.Bucket(k)) {
						if r.Type == ResourceIngests {
							holders[r.ID] = append(holders[r.ID], l.ID)
						}
					}
					return nil
				})
			}
			b := ingestsBucket(tx, ns)
			if b == nil {
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				in := readIngest(b.Bucket(k))
				out = append(out, IngestRecord{Namespace: ns, Ref: string(k), BackendRef: in.bref, Leases: holders[string(k)]})
				return nil
			})
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Ref < out[j].Ref
	})
	return out, err
}

// DropIngestRecord forgets the ingest ref of ns: for a record whose ingest
// the content plugin no longer has.
func (db *DB) DropIngestRecord(ns, ref string) error {
	return db.update(func(tx *bolt.Tx) error { return dropIngest(tx, ns, ref) })
}
