package metadata

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/labels"
)

// maxLabelSize bounds a label's key plus value, as containerd does;
// maxLabelsSize the labels of one object together, so that updates adding
// labels one by one cannot grow a record without end.
const (
	maxLabelSize  = 4096
	maxLabelsSize = 1 << 20
)

func validateLabels(labels map[string]string) error {
	total := 0
	for k, v := range labels {
		total += len(k) + len(v)
		if total > maxLabelsSize {
			return fmt.Errorf("labels: more than %d bytes together: %w", maxLabelsSize, errdefs.ErrInvalidArgument)
		}
		if k == "" {
			return fmt.Errorf("label key is empty: %w", errdefs.ErrInvalidArgument)
		}
		if len(k)+len(v) > maxLabelSize {
			return fmt.Errorf("label %q: longer than %d bytes: %w", k, maxLabelSize, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// updateLabels applies fieldpaths to current by sdk/labels' rule (an empty
// value deletes).
func updateLabels(current, update map[string]string, fieldpaths []string) (map[string]string, error) {
	return labels.Update(current, update, fieldpaths...)
}

// readLabels reads the labels sub-bucket of b.
func readLabels(b *bolt.Bucket) map[string]string {
	lb := b.Bucket(bucketLabels)
	if lb == nil {
		return nil
	}
	out := map[string]string{}
	lb.ForEach(func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	})
	if len(out) == 0 {
		return nil
	}
	return out
}

// writeLabels replaces the labels sub-bucket of b; empty values are not
// stored.
func writeLabels(b *bolt.Bucket, m map[string]string) error {
	if b.Bucket(bucketLabels) != nil {
		if err := b.DeleteBucket(bucketLabels); err != nil {
			return err
		}
	}
	lb, err := b.CreateBucket(bucketLabels)
	if err != nil {
		return err
	}
	for k, v := range labels.Clean(m) {
		if err := lb.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

func readTime(b *bolt.Bucket, key []byte) time.Time {
	var t time.Time
	if v := b.Get(key); v != nil {
		_ = t.UnmarshalBinary(v)
	}
	return t
}

func writeTime(b *bolt.Bucket, key []byte, t time.Time) error {
	v, err := t.UTC().MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(key, v)
}
