package metadata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

// Lease holds resources against garbage collection until it expires
// (label keel.io/gc.expire, RFC 3339) or is deleted.
type Lease struct {
	ID        string
	Labels    map[string]string
	CreatedAt time.Time
}

// LeaseResource is a resource attached to a lease: Type "content" (ID a
// digest), "ingests" (ID an ingest ref) or "snapshots/<snapshotter>" (ID a
// snapshot key).
type LeaseResource struct {
	ID   string
	Type string
}

// Resource types of a lease.
const (
	ResourceContent  = "content"
	ResourceIngests  = "ingests"
	ResourceSnapshot = "snapshots" // "snapshots/<snapshotter>"
)

// Leases manages the leases of the call's namespace.
type Leases struct{ db *DB }

// Leases returns the lease store of db.
func (db *DB) Leases() *Leases { return &Leases{db: db} }

func leasesBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketLeases)
}

func leaseNotFound(id string) error {
	return fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
}

func readLease(b *bolt.Bucket, id string) (Lease, bool) {
	if b == nil {
		return Lease{}, false
	}
	lb := b.Bucket([]byte(id))
	if lb == nil {
		return Lease{}, false
	}
	return Lease{ID: id, Labels: readLabels(lb), CreatedAt: readTime(lb, keyCreatedAt)}, true
}

// Create makes a lease in the call's namespace; an empty ID gets a random
// one. AlreadyExists when the id is taken.
func (s *Leases) Create(ctx context.Context, l Lease) (Lease, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Lease{}, err
	}
	if l.ID == "" {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return Lease{}, err
		}
		l.ID = hex.EncodeToString(rnd[:])
	}
	if strings.ContainsAny(l.ID, "/\x00") {
		return Lease{}, fmt.Errorf("lease %q: id holds '/' or NUL: %w", l.ID, errdefs.ErrInvalidArgument)
	}
	if err := validateLabels(l.Labels); err != nil {
		return Lease{}, fmt.Errorf("lease %q: %w", l.ID, err)
	}
	l.CreatedAt = time.Now().UTC()
	err = s.db.update(func(tx *bolt.Tx) error {
		if _, _, err := createNamespace(tx, ns); err != nil {
			return err
		}
		b := leasesBucket(tx, ns)
		if b.Bucket([]byte(l.ID)) != nil {
			return fmt.Errorf("lease %q: %w", l.ID, errdefs.ErrAlreadyExists)
		}
		lb, err := b.CreateBucket([]byte(l.ID))
		if err != nil {
			return err
		}
		if err := writeTime(lb, keyCreatedAt, l.CreatedAt); err != nil {
			return err
		}
		if err := writeLabels(lb, l.Labels); err != nil {
			return err
		}
		l, _ = readLease(b, l.ID)
		return nil
	})
	return l, err
}

type leaseAdaptor Lease

func (a leaseAdaptor) Field(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	switch path[0] {
	case "id":
		return a.ID, a.ID != ""
	case "labels":
		return filters.MapField(a.Labels, path[1:])
	}
	return "", false
}

// List returns the leases of the call's namespace matching any of fs (id,
// labels.<key>), by id.
func (s *Leases) List(ctx context.Context, fs ...string) ([]Lease, error) {
	return listRecords(ctx, s.db, leasesBucket, readLease,
		func(r Lease) filters.Adaptor { return leaseAdaptor(r) }, fs...)
}

// Delete removes a lease (its resources are then kept only by other roots)
// and triggers a collection; NotFound when absent.
func (s *Leases) Delete(ctx context.Context, id string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := leasesBucket(tx, ns)
		if b == nil || b.Bucket([]byte(id)) == nil {
			return leaseNotFound(id)
		}
		return b.DeleteBucket([]byte(id))
	}); err != nil {
		return err
	}
	s.db.triggerGC()
	return nil
}

type leaseKey struct{ ns, id string }

// Hold keeps lease id of the call's namespace from expiring while an
// operation of this process uses it, until release is called: the
// collector keeps a held lease, past its expiry or not. An expiry is for
// the leases whose owner died (with keeld); an owner that is only slow,
// a pull or an import taking longer than its lease's expiry, keeps what it
// wrote.
func (s *Leases) Hold(ctx context.Context, id string) (release func(), err error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	k := leaseKey{ns, id}
	s.db.heldMu.Lock()
	if s.db.held == nil {
		s.db.held = map[leaseKey]int{}
	}
	s.db.held[k]++
	s.db.heldMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.db.heldMu.Lock()
			defer s.db.heldMu.Unlock()
			if s.db.held[k]--; s.db.held[k] <= 0 {
				delete(s.db.held, k)
			}
		})
	}, nil
}

// heldLeases returns the leases held now.
func (db *DB) heldLeases() map[leaseKey]bool {
	db.heldMu.Lock()
	defer db.heldMu.Unlock()
	held := make(map[leaseKey]bool, len(db.held))
	for k := range db.held {
		held[k] = true
	}
	return held
}

// resourcePath is the bucket path, under a lease, and key of r.
func resourcePath(r LeaseResource) ([][]byte, []byte, error) {
	if r.ID == "" {
		return nil, nil, fmt.Errorf("lease resource id is empty: %w", errdefs.ErrInvalidArgument)
	}
	switch {
	case r.Type == ResourceContent:
		if err := digest.Digest(r.ID).Validate(); err != nil {
			return nil, nil, fmt.Errorf("lease resource %q: %v: %w", r.ID, err, errdefs.ErrInvalidArgument)
		}
		return [][]byte{[]byte(ResourceContent)}, []byte(r.ID), nil
	case r.Type == ResourceIngests:
		return [][]byte{[]byte(ResourceIngests)}, []byte(r.ID), nil
	case strings.HasPrefix(r.Type, ResourceSnapshot+"/") && len(r.Type) > len(ResourceSnapshot)+1:
		return [][]byte{[]byte(ResourceSnapshot), []byte(r.Type[len(ResourceSnapshot)+1:])}, []byte(r.ID), nil
	}
	return nil, nil, fmt.Errorf("lease resource type %q: not content, ingests or snapshots/<snapshotter>: %w", r.Type, errdefs.ErrInvalidArgument)
}

// addLeaseResource attaches r to lease id of ns within tx; NotFound when
// the lease does not exist.
func addLeaseResource(tx *bolt.Tx, ns, id string, r LeaseResource) error {
	path, key, err := resourcePath(r)
	if err != nil {
		return err
	}
	b := leasesBucket(tx, ns)
	if b == nil || b.Bucket([]byte(id)) == nil {
		return leaseNotFound(id)
	}
	rb := b.Bucket([]byte(id))
	for _, p := range path {
		if rb, err = rb.CreateBucketIfNotExists(p); err != nil {
			return err
		}
	}
	return rb.Put(key, nil)
}

// attachToLease attaches r to the lease ctx carries, if any.
func attachToLease(ctx context.Context, tx *bolt.Tx, ns string, r LeaseResource) error {
	id, ok := scope.Lease(ctx)
	if !ok {
		return nil
	}
	return addLeaseResource(tx, ns, id, r)
}

// AddResource attaches r to lease id; NotFound when the lease does not
// exist. The resource need not exist (yet).
func (s *Leases) AddResource(ctx context.Context, id string, r LeaseResource) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	return s.db.update(func(tx *bolt.Tx) error { return addLeaseResource(tx, ns, id, r) })
}

// DeleteResource detaches r from lease id; NotFound when the lease does not
// exist.
func (s *Leases) DeleteResource(ctx context.Context, id string, r LeaseResource) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	path, key, err := resourcePath(r)
	if err != nil {
		return err
	}
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := leasesBucket(tx, ns)
		if b == nil || b.Bucket([]byte(id)) == nil {
			return leaseNotFound(id)
		}
		rb := b.Bucket([]byte(id))
		for _, p := range path {
			if rb = rb.Bucket(p); rb == nil {
				return nil
			}
		}
		return rb.Delete(key)
	}); err != nil {
		return err
	}
	s.db.triggerGC()
	return nil
}

// leaseResources reads the resources of lease bucket lb.
func leaseResources(lb *bolt.Bucket) []LeaseResource {
	var out []LeaseResource
	for _, t := range []string{ResourceContent, ResourceIngests} {
		if rb := lb.Bucket([]byte(t)); rb != nil {
			rb.ForEach(func(k, _ []byte) error {
				out = append(out, LeaseResource{ID: string(k), Type: t})
				return nil
			})
		}
	}
	if sb := lb.Bucket([]byte(ResourceSnapshot)); sb != nil {
		sb.ForEachBucket(func(sn []byte) error {
			return sb.Bucket(sn).ForEach(func(k, _ []byte) error {
				out = append(out, LeaseResource{ID: string(k), Type: ResourceSnapshot + "/" + string(sn)})
				return nil
			})
		})
	}
	return out
}

// ListResources returns the resources attached to lease id; NotFound when
// the lease does not exist.
func (s *Leases) ListResources(ctx context.Context, id string) ([]LeaseResource, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	var out []LeaseResource
	err = s.db.view(func(tx *bolt.Tx) error {
		b := leasesBucket(tx, ns)
		if b == nil || b.Bucket([]byte(id)) == nil {
			return leaseNotFound(id)
		}
		out = leaseResources(b.Bucket([]byte(id)))
		return nil
	})
	return out, err
}
