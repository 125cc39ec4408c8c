package metadata

import (
	"context"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Namespace is a tenant: its name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Namespaces manages the namespaces of a DB.
type Namespaces struct{ db *DB }

// Namespaces returns the namespace store of db.
func (db *DB) Namespaces() *Namespaces { return &Namespaces{db: db} }

// Create makes a namespace; AlreadyExists when it exists, InvalidArgument for
// a bad name or labels.
func (s *Namespaces) Create(ctx context.Context, ns Namespace) (Namespace, error) {
	if err := namespaces.Validate(ns.Name); err != nil {
		return Namespace{}, err
	}
	if err := validateLabels(ns.Labels); err != nil {
		return Namespace{}, fmt.Errorf("namespace %q: %w", ns.Name, err)
	}
	err := s.db.update(func(tx *bolt.Tx) error {
		b, created, err := createNamespace(tx, ns.Name)
		if err != nil {
			return err
		}
		if !created {
			return fmt.Errorf("namespace %q: %w", ns.Name, errdefs.ErrAlreadyExists)
		}
		return writeLabels(b, ns.Labels)
	})
	if err != nil {
		return Namespace{}, err
	}
	return s.Get(ctx, ns.Name)
}

// Get returns a namespace; NotFound when absent.
func (s *Namespaces) Get(ctx context.Context, name string) (Namespace, error) {
	var out Namespace
	err := s.db.view(func(tx *bolt.Tx) error {
		b := namespaceBucket(tx, name)
		if b == nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrNotFound)
		}
		out = Namespace{Name: name, Labels: readLabels(b)}
		return nil
	})
	return out, err
}

// List returns every namespace, by name.
func (s *Namespaces) List(ctx context.Context) ([]Namespace, error) {
	var out []Namespace
	err := s.db.view(func(tx *bolt.Tx) error {
		v1 := tx.Bucket(bucketV1)
		if v1 == nil {
			return nil
		}
		return v1.ForEachBucket(func(k []byte) error {
			out = append(out, Namespace{Name: string(k), Labels: readLabels(v1.Bucket(k))})
			return nil
		})
	})
	return out, err
}

// Update changes a namespace's labels as fieldpaths say ("labels",
// "labels.<key>"; none means all labels); NotFound when absent.
func (s *Namespaces) Update(ctx context.Context, ns Namespace, fieldpaths ...string) (Namespace, error) {
	var out Namespace
	err := s.db.update(func(tx *bolt.Tx) error {
		b := namespaceBucket(tx, ns.Name)
		if b == nil {
			return fmt.Errorf("namespace %q: %w", ns.Name, errdefs.ErrNotFound)
		}
		labels, err := updateLabels(readLabels(b), ns.Labels, fieldpaths)
		if err != nil {
			return fmt.Errorf("namespace %q: %w", ns.Name, err)
		}
		if err := validateLabels(labels); err != nil {
			return fmt.Errorf("namespace %q: %w", ns.Name, err)
		}
		if err := writeLabels(b, labels); err != nil {
			return err
		}
		out = Namespace{Name: ns.Name, Labels: readLabels(b)}
		return nil
	})
	return out, err
}

// Delete removes an empty namespace: NotFound when absent,
// FailedPrecondition naming what it still holds (images, containers,
// leases, content, snapshots).
func (s *Namespaces) Delete(ctx context.Context, name string) error {
	return s.db.update(func(tx *bolt.Tx) error {
		b := namespaceBucket(tx, name)
		if b == nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrNotFound)
		}
		if held := holds(b); len(held) > 0 {
			return fmt.Errorf("namespace %q: still holds %s: %w", name, strings.Join(held, ", "), errdefs.ErrFailedPrecondition)
		}
		return tx.Bucket(bucketV1).DeleteBucket([]byte(name))
	})
}

// holds names the kinds of objects namespace bucket b still has.
func holds(b *bolt.Bucket) []string {
	var out []string
	for _, kind := range []struct {
		name string
		path [][]byte
	}{
		{"images", [][]byte{bucketImages}},
		{"containers", [][]byte{bucketConts}},
		{"leases", [][]byte{bucketLeases}},
		{"content", [][]byte{bucketContent, bucketBlob}},
		{"ingests", [][]byte{bucketContent, bucketIngests}},
	} {
		sub := b
		for _, n := range kind.path {
			if sub = sub.Bucket(n); sub == nil {
				break
			}
		}
		if sub != nil && !empty(sub) {
			out = append(out, kind.name)
		}
	}
	if sb := b.Bucket(bucketSnaps); sb != nil {
		sb.ForEachBucket(func(k []byte) error {
			if !empty(sb.Bucket(k)) {
				out = append(out, "snapshots ("+string(k)+")")
			}
			return nil
		})
	}
	return out
}

func empty(b *bolt.Bucket) bool {
	k, _ := b.Cursor().First()
	return k == nil
}
