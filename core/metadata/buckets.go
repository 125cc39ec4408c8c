package metadata

import (
	bolt "go.etcd.io/bbolt"
)

// Bucket and key names of the schema drawn in the package doc.
var (
	bucketMeta     = []byte("meta")
	keyVersion     = []byte("version")
	bucketV1       = []byte("v1")
	bucketLabels   = []byte("labels")
	bucketImages   = []byte("images")
	bucketConts    = []byte("containers")
	bucketLeases   = []byte("leases")
	bucketContent  = []byte("content")
	bucketBlob     = []byte("blob")
	bucketIngests  = []byte("ingests")
	bucketSnaps    = []byte("snapshots")
	bucketChildren = []byte("children")

	keyID         = []byte("id")
	keyKind       = []byte("kind")
	keyParent     = []byte("parent")
	keySize       = []byte("size")
	keyRef        = []byte("ref")
	keyExpected   = []byte("expected")
	keyCreatedAt  = []byte("createdat")
	keyUpdatedAt  = []byte("updatedat")
	keyPending    = []byte("pending")
	keyCommitFrom = []byte("commitfrom")
)

// nsBuckets are made with every namespace.
var nsBuckets = [][]byte{bucketLabels, bucketImages, bucketConts, bucketLeases, bucketContent, bucketSnaps}

// bucketPath walks nested buckets from the root; nil when one is missing.
func bucketPath(tx *bolt.Tx, names ...[]byte) *bolt.Bucket {
	b := tx.Bucket(names[0])
	for _, n := range names[1:] {
		if b == nil {
			return nil
		}
		b = b.Bucket(n)
	}
	return b
}

// createBucketPath makes nested buckets from the root as needed.
func createBucketPath(tx *bolt.Tx, names ...[]byte) (*bolt.Bucket, error) {
	b, err := tx.CreateBucketIfNotExists(names[0])
	if err != nil {
		return nil, err
	}
	for _, n := range names[1:] {
		if b, err = b.CreateBucketIfNotExists(n); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// namespaceBucket is v1/<ns>, nil when the namespace does not exist.
func namespaceBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns))
}

// createNamespace makes v1/<ns> and its buckets; created tells whether it is
// new.
func createNamespace(tx *bolt.Tx, ns string) (b *bolt.Bucket, created bool, err error) {
	v1, err := tx.CreateBucketIfNotExists(bucketV1)
	if err != nil {
		return nil, false, err
	}
	if b = v1.Bucket([]byte(ns)); b != nil {
		return b, false, nil
	}
	if b, err = v1.CreateBucket([]byte(ns)); err != nil {
		return nil, false, err
	}
	for _, n := range nsBuckets {
		if _, err := b.CreateBucket(n); err != nil {
			return nil, false, err
		}
	}
	return b, true, nil
}

// snapshotsBucket is v1/<ns>/snapshots/<snapshotter>, nil when absent.
func snapshotsBucket(tx *bolt.Tx, ns, snapshotter string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketSnaps, []byte(snapshotter))
}

// createSnapshotsBucket makes v1/<ns>/snapshots/<snapshotter>, and the
// namespace with it.
func createSnapshotsBucket(tx *bolt.Tx, ns, snapshotter string) (*bolt.Bucket, error) {
	if _, _, err := createNamespace(tx, ns); err != nil {
		return nil, err
	}
	return createBucketPath(tx, bucketV1, []byte(ns), bucketSnaps, []byte(snapshotter))
}

// blobBucket is v1/<ns>/content/blob, nil when absent.
func blobBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketContent, bucketBlob)
}

// ingestsBucket is v1/<ns>/content/ingests, nil when absent.
func ingestsBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return bucketPath(tx, bucketV1, []byte(ns), bucketContent, bucketIngests)
}

// createContentBucket makes v1/<ns>/content/<name>, and the namespace with it.
func createContentBucket(tx *bolt.Tx, ns string, name []byte) (*bolt.Bucket, error) {
	if _, _, err := createNamespace(tx, ns); err != nil {
		return nil, err
	}
	return createBucketPath(tx, bucketV1, []byte(ns), bucketContent, name)
}
