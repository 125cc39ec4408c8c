package keelv1

// gRPC metadata keys of keeld's API. The namespace scopes every call; the
// snapshotter picks the backend of a Snapshotter call (keeld's default when
// absent).
const (
	MetadataNamespace   = "keel-namespace"
	MetadataSnapshotter = "keel-snapshotter"
	// MetadataResolver picks the resolver plugin of a Resolver call
	// (keeld's only resolver when absent).
	MetadataResolver = "keel-resolver"
)

// DefaultNamespace is used when a call names none.
const DefaultNamespace = "default"

// MetadataLease names the lease a call works under: what the call creates
// (content, ingests, snapshots) is attached to it, so garbage collection
// keeps it while the lease lives.
const MetadataLease = "keel-lease"
