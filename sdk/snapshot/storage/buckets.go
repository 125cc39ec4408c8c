package storage

// Bucket and key names, in one place; the tree is drawn in the package doc.
var (
	bucketV1        = []byte("v1")
	bucketSnapshots = []byte("snapshots")
	bucketLabels    = []byte("labels")
	bucketChildren  = []byte("children")

	keyVersion = []byte("version")
	keyIDBlock = []byte("idblock")
	keyID      = []byte("id")
	keyKind    = []byte("kind")
	keyParent  = []byte("parent")
	keyCreated = []byte("created")
	keyUpdated = []byte("updated")
)

// schemaVersion is written under v1/version; a later layout adds a
// migration from this one.
const schemaVersion = 1
