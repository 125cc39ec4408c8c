package metadata

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk/filters"
)

// listRecords returns the records of one kind in the call's namespace that
// match any of fs, in key order: images, containers and leases are each a
// bucket of one sub-bucket per record, read by read and seen by filters
// through adapt.
func listRecords[T any](ctx context.Context, db *DB,
	bucket func(*bolt.Tx, string) *bolt.Bucket,
	read func(*bolt.Bucket, string) (T, bool),
	adapt func(T) filters.Adaptor,
	fs ...string,
) ([]T, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	filter, err := filters.Parse(fs...)
	if err != nil {
		return nil, err
	}
	var out []T
	err = db.view(func(tx *bolt.Tx) error {
		b := bucket(tx, ns)
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			r, _ := read(b, string(k))
			if filters.Match(filter, adapt(r)) {
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}
