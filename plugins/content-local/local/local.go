// Package local is a content store on the local filesystem.
//
// Layout under the root:
//
//	blobs/<algorithm>/<hex>       committed blobs, read-only files
//	ingest/<sha256 of ref>/       one ingest per ref:
//	    data                      the bytes written so far
//	    ref                       the ref, in full
//	    total, expected           the expected size and digest, when known
//	    startedat                 when the ingest began (RFC 3339)
//	    updatedat                 the last writer's UpdatedAt, kept at Close
//	    verified                  "<size> <digest>" of data as the last writer
//	                              closed it: a resume checks it first and
//	                              starts again at 0 if data changed
//	meta.db                       bbolt: labels and times of blobs
//
// meta.db holds one bucket tree:
//
//	v1/
//	  blobs/<digest> → JSON {created, updated, labels}
//
// A blob's file is the truth about whether it exists and its size; its
// record adds labels and times. Commit verifies size and digest, fsyncs the
// data and renames it into place, so a crash never leaves a blob under its
// digest name that is not that blob; a crash between the rename and the
// record leaves a blob without labels.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/labels"
)

// Bucket names.
var (
	bucketV1    = []byte("v1")
	bucketBlobs = []byte("blobs")
)

// Config is the plugin's config block. It has no keys yet; unknown keys are
// refused.
type Config struct{}

// Store is a content.Store on a local directory.
type Store struct {
	root   string
	logger hclog.Logger
	db     *bolt.DB

	mu    sync.Mutex
	locks map[string]struct{} // refs held by a writer
}

var _ content.Store = (*Store)(nil)

// New opens the store in env.Root.
func New(ctx context.Context, env sdk.Env) (content.Store, error) {
	var cfg Config
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	s, err := Open(env.Root, env.Logger)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens (making it when needed) the store in root.
func Open(root string, logger hclog.Logger) (*Store, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	for _, dir := range []string{filepath.Join(root, "blobs"), filepath.Join(root, "ingest")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(root, "meta.db"), err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		_, err = v1.CreateBucketIfNotExists(bucketBlobs)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &Store{root: root, logger: logger, db: db, locks: map[string]struct{}{}}, nil
}

// Close closes the metadata file. Safe to call more than once.
func (s *Store) Close() error {
	if s == nil || s.db == nil {
		return nil
	}
	return s.db.Close()
}

// record is a blob's entry in meta.db.
type record struct {
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func blobsBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket(bucketBlobs)
}

func getRecord(b *bolt.Bucket, dgst digest.Digest) (record, bool) {
	var r record
	v := b.Get([]byte(dgst))
	if v == nil || json.Unmarshal(v, &r) != nil {
		return record{}, false
	}
	return r, true
}

func putRecord(b *bolt.Bucket, dgst digest.Digest, r record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(dgst), v)
}

func (s *Store) blobPath(dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %v: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(s.root, "blobs", dgst.Algorithm().String(), dgst.Encoded()), nil
}

// info joins a blob's file and its record.
func info(dgst digest.Digest, fi fs.FileInfo, r record, ok bool) content.Info {
	in := content.Info{Digest: dgst, Size: fi.Size(), CreatedAt: fi.ModTime().UTC(), UpdatedAt: fi.ModTime().UTC()}
	if ok {
		in.CreatedAt, in.UpdatedAt, in.Labels = r.Created, r.Updated, r.Labels
	}
	return in
}

func (s *Store) stat(dgst digest.Digest) (fs.FileInfo, error) {
	p, err := s.blobPath(dgst)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
	}
	return fi, err
}

// Info of a committed blob.
func (s *Store) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	fi, err := s.stat(dgst)
	if err != nil {
		return content.Info{}, err
	}
	var (
		r  record
		ok bool
	)
	err = s.db.View(func(tx *bolt.Tx) error {
		r, ok = getRecord(blobsBucket(tx), dgst)
		return nil
	})
	return info(dgst, fi, r, ok), err
}

// Update changes labels by field path, by sdk/labels' rule: "labels"
// replaces all of them, "labels.<key>" sets one or, given an empty value,
// removes it; no paths means "labels".
func (s *Store) Update(ctx context.Context, in content.Info, fieldpaths ...string) (content.Info, error) {
	fi, err := s.stat(in.Digest)
	if err != nil {
		return content.Info{}, err
	}
	var out content.Info
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := blobsBucket(tx)
		r, ok := getRecord(b, in.Digest)
		if !ok {
			r = record{Created: fi.ModTime().UTC()}
		}
		next, err := labels.Update(r.Labels, in.Labels, fieldpaths...)
		if err != nil {
			return fmt.Errorf("update %s: %w", in.Digest, err)
		}
		r.Labels, r.Updated = next, time.Now().UTC()
		out = info(in.Digest, fi, r, true)
		return putRecord(b, in.Digest, r)
	})
	if err != nil {
		return content.Info{}, err
	}
	return out, nil
}

// Walk visits the blobs matching any of the filters. fn runs outside any
// transaction, so it may call the store.
func (s *Store) Walk(ctx context.Context, fn content.WalkFunc, fs ...string) error {
	filter, err := filters.Parse(fs...)
	if err != nil {
		return err
	}
	algs, err := os.ReadDir(filepath.Join(s.root, "blobs"))
	if err != nil {
		return err
	}
	var infos []content.Info
	err = s.db.View(func(tx *bolt.Tx) error {
		b := blobsBucket(tx)
		for _, alg := range algs {
			entries, err := os.ReadDir(filepath.Join(s.root, "blobs", alg.Name()))
			if err != nil {
				return err
			}
			for _, e := range entries {
				dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), e.Name())
				if dgst.Validate() != nil {
					continue // not ours
				}
				fi, err := e.Info()
				if err != nil {
					continue // deleted meanwhile
				}
				r, ok := getRecord(b, dgst)
				in := info(dgst, fi, r, ok)
				if filter.Match(content.AdaptInfo(in)) {
					infos = append(infos, in)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a blob and its record.
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	p, err := s.blobPath(dgst)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return blobsBucket(tx).Delete([]byte(dgst))
	})
}

// ReaderAt opens a blob's file; reads are preads.
func (s *Store) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	p, err := s.BlobPath(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	return content.OpenFile(p)
}

// BlobPath names a committed blob's file, which is never written again.
func (s *Store) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	p, err := s.blobPath(dgst)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
		}
		return "", err
	}
	return p, nil
}

// lock takes ref for a writer (or an abort); Unavailable when taken.
func (s *Store) lock(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.locks[ref]; held {
		return fmt.Errorf("ref %q locked: %w", ref, errdefs.ErrUnavailable)
	}
	s.locks[ref] = struct{}{}
	return nil
}

func (s *Store) unlock(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.locks, ref)
}

// ingestDir names a ref's ingest by hash, so any ref is a safe file name.
func (s *Store) ingestDir(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.root, "ingest", hex.EncodeToString(sum[:]))
}
