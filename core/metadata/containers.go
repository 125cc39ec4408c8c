package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Container is a container record: what a task is made from. It is a
// garbage collection root holding its snapshot (snapshotter, snapshot key)
// and whatever its gc.ref labels name.
type Container struct {
	ID          string
	Image       string
	Snapshotter string
	SnapshotKey string
	// Spec is the OCI runtime spec, as JSON.
	Spec []byte
	// Runtime names the runtime plugin; RuntimeOptions are its options, as
	// JSON.
	Runtime        string
	RuntimeOptions []byte
	// Network is the container's network attachment, the API's
	// ContainerNetwork message in its wire form (nil: the spec's).
	Network   []byte
	Labels    map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Containers manages the container records of the call's namespace.
type Containers struct{ db *DB }

// Containers returns the container store of db.
func (db *DB) Containers() *Containers { return &Containers{db: db} }

// Keys of a container's bucket; snapshotter and snapshotkey are read by the
// garbage collector (gc.go).
var (
	keyImage          = []byte("image")
	keySnapshotter    = []byte("snapshotter")
	keySnapshotKey    = []byte("snapshotkey")
	keySpec           = []byte("spec")
	keyRuntime        = []byte("runtime")
	keyRuntimeOptions = []byte("runtimeoptions")
	keyNetwork        = []byte("network")
)

func validateContainer(c Container) error {
	if err := runtime.ValidateContainerID(c.ID); err != nil {
		return err
	}
	if (c.Snapshotter == "") != (c.SnapshotKey == "") {
		return fmt.Errorf("container %q: snapshotter and snapshot key go together: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if len(c.Spec) == 0 || !json.Valid(c.Spec) {
		return fmt.Errorf("container %q: spec is not JSON: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if len(c.RuntimeOptions) > 0 && !json.Valid(c.RuntimeOptions) {
		return fmt.Errorf("container %q: runtime options are not JSON: %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if err := validateLabels(c.Labels); err != nil {
		return fmt.Errorf("container %q: %w", c.ID, err)
	}
	return nil
}

func containersBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketConts)
}

func readContainer(b *bolt.Bucket, id string) (Container, bool) {
	if b == nil {
		return Container{}, false
	}
	cb := b.Bucket([]byte(id))
	if cb == nil {
		return Container{}, false
	}
	clone := func(k []byte) []byte {
		if v := cb.Get(k); v != nil {
			return append([]byte(nil), v...)
		}
		return nil
	}
	return Container{
		ID:             id,
		Image:          string(cb.Get(keyImage)),
		Snapshotter:    string(cb.Get(keySnapshotter)),
		SnapshotKey:    string(cb.Get(keySnapshotKey)),
		Spec:           clone(keySpec),
		Runtime:        string(cb.Get(keyRuntime)),
		RuntimeOptions: clone(keyRuntimeOptions),
		Network:        clone(keyNetwork),
		Labels:         readLabels(cb),
		CreatedAt:      readTime(cb, keyCreatedAt),
		UpdatedAt:      readTime(cb, keyUpdatedAt),
	}, true
}

func writeContainer(b *bolt.Bucket, c Container) error {
	if b.Bucket([]byte(c.ID)) != nil {
		if err := b.DeleteBucket([]byte(c.ID)); err != nil {
			return err
		}
	}
	cb, err := b.CreateBucket([]byte(c.ID))
	if err != nil {
		return err
	}
	for _, kv := range [][2][]byte{
		{keyImage, []byte(c.Image)},
		{keySnapshotter, []byte(c.Snapshotter)},
		{keySnapshotKey, []byte(c.SnapshotKey)},
		{keySpec, c.Spec},
		{keyRuntime, []byte(c.Runtime)},
		{keyRuntimeOptions, c.RuntimeOptions},
		{keyNetwork, c.Network},
	} {
		if len(kv[1]) == 0 {
			continue
		}
		if err := cb.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := writeTime(cb, keyCreatedAt, c.CreatedAt); err != nil {
		return err
	}
	if err := writeTime(cb, keyUpdatedAt, c.UpdatedAt); err != nil {
		return err
	}
	return writeLabels(cb, c.Labels)
}

func containerNotFound(id string) error {
	return fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
}

// Create records c in the call's namespace; AlreadyExists when the id is
// taken.
func (s *Containers) Create(ctx context.Context, c Container) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	if err := validateContainer(c); err != nil {
		return Container{}, err
	}
	now := time.Now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	err = s.db.update(func(tx *bolt.Tx) error {
		if _, _, err := createNamespace(tx, ns); err != nil {
			return err
		}
		b := containersBucket(tx, ns)
		if b.Bucket([]byte(c.ID)) != nil {
			return fmt.Errorf("container %q: %w", c.ID, errdefs.ErrAlreadyExists)
		}
		if err := writeContainer(b, c); err != nil {
			return err
		}
		c, _ = readContainer(b, c.ID)
		return nil
	})
	return c, err
}

// Get returns the container id; NotFound when absent.
func (s *Containers) Get(ctx context.Context, id string) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	var c Container
	err = s.db.view(func(tx *bolt.Tx) error {
		var ok bool
		if c, ok = readContainer(containersBucket(tx, ns), id); !ok {
			return containerNotFound(id)
		}
		return nil
	})
	return c, err
}

// containerAdaptor exposes a container's fields to filters: id, image,
// runtime (or runtime.name), snapshotter, snapshotkey, labels.<key>; id,
// image and runtime are absent when empty, as in containerd.
type containerAdaptor Container

func (a containerAdaptor) Field(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	switch path[0] {
	case "id":
		return a.ID, a.ID != ""
	case "image":
		return a.Image, a.Image != ""
	case "runtime":
		// containerd's is runtime.name; plain runtime is keel's.
		if len(path) == 2 && path[1] != "name" || len(path) > 2 {
			return "", false
		}
		return a.Runtime, a.Runtime != ""
	case "snapshotter":
		return a.Snapshotter, true
	case "snapshotkey", "snapshot_key":
		return a.SnapshotKey, true
	case "labels":
		return filters.MapField(a.Labels, path[1:])
	}
	return "", false
}

// List returns the containers of the call's namespace that match any of fs,
// by id.
func (s *Containers) List(ctx context.Context, fs ...string) ([]Container, error) {
	return listRecords(ctx, s.db, containersBucket, readContainer,
		func(r Container) filters.Adaptor { return containerAdaptor(r) }, fs...)
}

// Update changes the fields of c.ID that fieldpaths name: "labels",
// "labels.<key>", "spec", "image", "snapshotkey" (with its snapshotter),
// "runtimeoptions"; none means labels. The id and runtime never change.
// NotFound when absent. A new snapshot may leave the old one garbage, so it
// triggers a collection.
func (s *Containers) Update(ctx context.Context, c Container, fieldpaths ...string) (Container, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Container{}, err
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels"}
	}
	var (
		out     Container
		resnap  bool
		changed bool
	)
	err = s.db.update(func(tx *bolt.Tx) error {
		b := containersBucket(tx, ns)
		cur, ok := readContainer(b, c.ID)
		if !ok {
			return containerNotFound(c.ID)
		}
		next := cur
		var labelPaths []string
		for _, p := range fieldpaths {
			switch {
			case p == "spec":
				next.Spec = c.Spec
			case p == "image":
				next.Image = c.Image
			case p == "snapshotkey" || p == "snapshot_key":
				next.Snapshotter, next.SnapshotKey = c.Snapshotter, c.SnapshotKey
			case p == "runtimeoptions" || p == "runtime_options":
				next.RuntimeOptions = c.RuntimeOptions
			case p == "labels" || strings.HasPrefix(p, "labels."):
				labelPaths = append(labelPaths, p)
			default:
				return fmt.Errorf("container %q: field path %q: only labels, spec, image, snapshotkey and runtimeoptions can be updated: %w", c.ID, p, errdefs.ErrInvalidArgument)
			}
		}
		if len(labelPaths) > 0 {
			labels, err := updateLabels(cur.Labels, c.Labels, labelPaths)
			if err != nil {
				return fmt.Errorf("container %q: %w", c.ID, err)
			}
			next.Labels = labels
		}
		if err := validateContainer(next); err != nil {
			return err
		}
		resnap = next.Snapshotter != cur.Snapshotter || next.SnapshotKey != cur.SnapshotKey
		changed = true
		next.UpdatedAt = time.Now().UTC()
		if err := writeContainer(b, next); err != nil {
			return err
		}
		out, _ = readContainer(b, c.ID)
		return nil
	})
	if err == nil && changed && resnap {
		s.db.triggerGC()
	}
	return out, err
}

// Delete removes the container id, then triggers a collection (its
// snapshot may be garbage now); NotFound when absent. Whether a task still
// runs is the caller's to check.
func (s *Containers) Delete(ctx context.Context, id string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := containersBucket(tx, ns)
		if b == nil || b.Bucket([]byte(id)) == nil {
			return containerNotFound(id)
		}
		return b.DeleteBucket([]byte(id))
	}); err != nil {
		return err
	}
	s.db.triggerGC()
	return nil
}
