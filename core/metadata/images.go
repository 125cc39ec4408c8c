package metadata

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

// Image is an image record: a name pointing at a target descriptor (a
// manifest or an index in the content store).
type Image struct {
	Name      string
	Target    ocispec.Descriptor
	Labels    map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Images manages the image records of the call's namespace. An image is a
// garbage collection root; removing one (or changing its target) triggers
// a collection.
type Images struct{ db *DB }

// Images returns the image store of db.
func (db *DB) Images() *Images { return &Images{db: db} }

var (
	bucketTarget      = []byte("target")
	bucketAnnotations = []byte("annotations")
	keyMediaType      = []byte("mediatype")
	keyDigest         = []byte("digest")
)

func validateImage(img Image) error {
	if img.Name == "" {
		return fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	if err := img.Target.Digest.Validate(); err != nil {
		return fmt.Errorf("image %q: target digest %q: %v: %w", img.Name, img.Target.Digest, err, errdefs.ErrInvalidArgument)
	}
	if img.Target.MediaType == "" {
		return fmt.Errorf("image %q: target media type is empty: %w", img.Name, errdefs.ErrInvalidArgument)
	}
	if img.Target.Size < 0 {
		return fmt.Errorf("image %q: target size %d: %w", img.Name, img.Target.Size, errdefs.ErrInvalidArgument)
	}
	if err := validateLabels(img.Labels); err != nil {
		return fmt.Errorf("image %q: %w", img.Name, err)
	}
	return nil
}

func imagesBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketImages)
}

func readImage(b *bolt.Bucket, name string) (Image, bool) {
	if b == nil {
		return Image{}, false
	}
	ib := b.Bucket([]byte(name))
	if ib == nil {
		return Image{}, false
	}
	img := Image{
		Name:      name,
		Labels:    readLabels(ib),
		CreatedAt: readTime(ib, keyCreatedAt),
		UpdatedAt: readTime(ib, keyUpdatedAt),
	}
	if tb := ib.Bucket(bucketTarget); tb != nil {
		size, _ := binary.Varint(tb.Get(keySize))
		img.Target = ocispec.Descriptor{
			MediaType: string(tb.Get(keyMediaType)),
			Digest:    digest.Digest(tb.Get(keyDigest)),
			Size:      size,
		}
		if ab := tb.Bucket(bucketAnnotations); ab != nil {
			img.Target.Annotations = map[string]string{}
			ab.ForEach(func(k, v []byte) error {
				img.Target.Annotations[string(k)] = string(v)
				return nil
			})
		}
	}
	return img, true
}

func writeImage(b *bolt.Bucket, img Image) error {
	if b.Bucket([]byte(img.Name)) != nil {
		if err := b.DeleteBucket([]byte(img.Name)); err != nil {
			return err
		}
	}
	ib, err := b.CreateBucket([]byte(img.Name))
	if err != nil {
		return err
	}
	if err := writeTime(ib, keyCreatedAt, img.CreatedAt); err != nil {
		return err
	}
	if err := writeTime(ib, keyUpdatedAt, img.UpdatedAt); err != nil {
		return err
	}
	if err := writeLabels(ib, img.Labels); err != nil {
		return err
	}
	tb, err := ib.CreateBucket(bucketTarget)
	if err != nil {
		return err
	}
	for _, kv := range [][2][]byte{
		{keyMediaType, []byte(img.Target.MediaType)},
		{keyDigest, []byte(img.Target.Digest)},
		{keySize, binary.AppendVarint(nil, img.Target.Size)},
	} {
		if err := tb.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if len(img.Target.Annotations) > 0 {
		ab, err := tb.CreateBucket(bucketAnnotations)
		if err != nil {
			return err
		}
		for k, v := range img.Target.Annotations {
			if err := ab.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
	}
	return nil
}

func imageNotFound(name string) error {
	return fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
}

// Create records img in the call's namespace; AlreadyExists when the name
// is taken.
func (s *Images) Create(ctx context.Context, img Image) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	if err := validateImage(img); err != nil {
		return Image{}, err
	}
	now := time.Now().UTC()
	img.CreatedAt, img.UpdatedAt = now, now
	err = s.db.update(func(tx *bolt.Tx) error {
		if _, _, err := createNamespace(tx, ns); err != nil {
			return err
		}
		b := imagesBucket(tx, ns)
		if b.Bucket([]byte(img.Name)) != nil {
			return fmt.Errorf("image %q: %w", img.Name, errdefs.ErrAlreadyExists)
		}
		if err := writeImage(b, img); err != nil {
			return err
		}
		img, _ = readImage(b, img.Name)
		return nil
	})
	return img, err
}

// Get returns the image called name; NotFound when absent.
func (s *Images) Get(ctx context.Context, name string) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	var img Image
	err = s.db.view(func(tx *bolt.Tx) error {
		var ok bool
		if img, ok = readImage(imagesBucket(tx, ns), name); !ok {
			return imageNotFound(name)
		}
		return nil
	})
	return img, err
}

// imageAdaptor exposes an image's fields to filters: name,
// target.mediatype, target.digest, target.size, annotations.<key> (the
// target's), labels.<key>; name and target.* are absent when empty, as in
// containerd.
type imageAdaptor Image

func (a imageAdaptor) Field(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	switch path[0] {
	case "name":
		return a.Name, a.Name != ""
	case "target":
		if len(path) < 2 {
			return "", false
		}
		switch path[1] {
		case "mediatype", "media_type", "mediaType":
			return a.Target.MediaType, a.Target.MediaType != ""
		case "digest":
			return a.Target.Digest.String(), a.Target.Digest != ""
		case "size":
			return strconv.FormatInt(a.Target.Size, 10), true
		}
	case "annotations":
		return filters.MapField(a.Target.Annotations, path[1:])
	case "labels":
		return filters.MapField(a.Labels, path[1:])
	}
	return "", false
}

// List returns the images of the call's namespace that match any of fs
// (containerd's filter syntax), by name.
func (s *Images) List(ctx context.Context, fs ...string) ([]Image, error) {
	return listRecords(ctx, s.db, imagesBucket, readImage,
		func(r Image) filters.Adaptor { return imageAdaptor(r) }, fs...)
}

// Update changes the fields of img.Name that fieldpaths name: "target",
// "labels", "labels.<key>", "annotations" (the target's); none means
// target and labels. NotFound when absent. A new target triggers a
// collection: the old one may be garbage now.
func (s *Images) Update(ctx context.Context, img Image, fieldpaths ...string) (Image, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Image{}, err
	}
	if img.Name == "" {
		return Image{}, fmt.Errorf("image name is empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"target", "labels"}
	}
	var (
		out      Image
		retarget bool
	)
	err = s.db.update(func(tx *bolt.Tx) error {
		b := imagesBucket(tx, ns)
		cur, ok := readImage(b, img.Name)
		if !ok {
			return imageNotFound(img.Name)
		}
		next := cur
		var labelPaths []string
		for _, p := range fieldpaths {
			switch {
			case p == "target":
				next.Target = img.Target
			case p == "annotations" || p == "target.annotations":
				next.Target.Annotations = maps.Clone(img.Target.Annotations)
			case p == "labels" || strings.HasPrefix(p, "labels."):
				labelPaths = append(labelPaths, p)
			default:
				return fmt.Errorf("image %q: field path %q: only target, annotations and labels can be updated: %w", img.Name, p, errdefs.ErrInvalidArgument)
			}
		}
		if len(labelPaths) > 0 {
			labels, err := updateLabels(cur.Labels, img.Labels, labelPaths)
			if err != nil {
				return fmt.Errorf("image %q: %w", img.Name, err)
			}
			next.Labels = labels
		}
		if err := validateImage(next); err != nil {
			return err
		}
		retarget = next.Target.Digest != cur.Target.Digest
		next.UpdatedAt = time.Now().UTC()
		if err := writeImage(b, next); err != nil {
			return err
		}
		out, _ = readImage(b, img.Name)
		return nil
	})
	if err == nil && retarget {
		s.db.triggerGC()
	}
	return out, err
}

// Delete removes the image called name, then triggers a collection;
// NotFound when absent.
func (s *Images) Delete(ctx context.Context, name string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := s.db.update(func(tx *bolt.Tx) error {
		b := imagesBucket(tx, ns)
		if b == nil || b.Bucket([]byte(name)) == nil {
			return imageNotFound(name)
		}
		return b.DeleteBucket([]byte(name))
	}); err != nil {
		return err
	}
	s.db.triggerGC()
	return nil
}
