// Package resolver is the resolver plugin contract: it moves images between
// registries and keeld.
//
// # Terms
//
// A reference names an image in a registry, e.g.
// "registry.example.com/library/busybox:1.36" or "...@sha256:…". Resolve
// turns it into its canonical name and the descriptor of what it points at
// (a manifest or an index). Fetch and Push move the bytes of one descriptor
// (a manifest, config or layer) of that reference. Registry hosts, mirrors,
// TLS and credentials belong to the resolver's own config; a call may
// carry a login of its own for the reference's registry (Credentials, in
// its context), which resolvers announcing CapabilityCallCredentials use.
//
//	name, desc, _ := r.Resolve(ctx, "example.com/app:v1")
//	rc, _ := r.Fetch(ctx, name, desc, 0) // the manifest
//	defer rc.Close()
//
// # Errors
//
// A malformed reference is InvalidArgument; a reference or blob the registry
// does not have is NotFound; a registry that cannot be reached is
// Unavailable; refused credentials are PermissionDenied. Push of content the
// registry already holds is AlreadyExists, which callers treat as success.
package resolver

import (
	"context"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Resolver is the resolver plugin kind.
type Resolver interface {
	// Resolve returns the canonical name of ref and the descriptor it
	// points at. InvalidArgument for a malformed ref, NotFound for an
	// unknown one.
	Resolve(ctx context.Context, ref string) (name string, desc ocispec.Descriptor, err error)
	// Fetch reads the content of desc, which belongs to ref, from offset
	// on. The caller closes the reader; closing early ends the transfer.
	// NotFound when the registry lacks it; InvalidArgument for an offset
	// outside [0, desc.Size].
	Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error)
	// Push uploads the content of desc, read from r, under ref. It fails
	// with AlreadyExists when the registry holds the content already (r may
	// then be left unread), and with FailedPrecondition when r's size or
	// digest differs from desc.
	Push(ctx context.Context, ref string, desc ocispec.Descriptor, r io.Reader) error
	// Close releases the resolver.
	Close() error
}

// FileFetcher is a resolver that can write what it fetches into a file on
// its machine (capability "fetch-to-file"): keeld hands it the content
// store's ingest file, and a blob's bytes then cross no process boundary
// after the registry's.
type FileFetcher interface {
	// FetchToFile writes the content of desc, which belongs to ref, from
	// offset on into the file at path, each byte at its own offset, and
	// calls progress with the offset reached after each write; an error
	// from progress stops the fetch and is returned. The file exists: it
	// is opened for writing, never made or truncated, and refused unless
	// it is a regular file with one link. The bytes are not verified
	// here: whoever commits the file checks the digest. Errors as Fetch.
	// Served by the SDK, the call holds an flock on the file and the
	// caller waits for it once cancelled: the file is not written after
	// FetchToFile returned.
	FetchToFile(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, path string, progress func(offset int64) error) error
}

// CapabilityFetchToFile is announced by resolvers that implement
// FileFetcher.
const CapabilityFetchToFile = "fetch-to-file"

// Attempt is one host a Resolve considered, for `keel image resolve
// --explain`.
type Attempt struct {
	// Host is the host (and path prefix) asked.
	Host string `json:"host"`
	// Role is "mirror" or "upstream".
	Role string `json:"role"`
	// Used is true for the host that answered.
	Used bool `json:"used"`
	// Reason says why the host was tried or skipped, or how it failed.
	Reason string `json:"reason"`
}

// Explainer is implemented by resolvers that can say which hosts a Resolve
// tried and why. The sdk client implements it; a plugin that does not is
// served with no attempts.
type Explainer interface {
	ResolveExplain(ctx context.Context, ref string) (name string, desc ocispec.Descriptor, attempts []Attempt, err error)
}

// Explain resolves ref with r, and lists the hosts tried when r is an
// Explainer.
func Explain(ctx context.Context, r Resolver, ref string) (string, ocispec.Descriptor, []Attempt, error) {
	if e, ok := r.(Explainer); ok {
		return e.ResolveExplain(ctx, ref)
	}
	name, desc, err := r.Resolve(ctx, ref)
	return name, desc, nil, err
}
