package client

import (
	"context"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// FetchOpt tunes a Fetch.
type FetchOpt func(*fetchOptions)

type fetchOptions struct{ resolver string }

// WithResolver names the resolver plugin a Fetch goes through (keeld's
// only one when not given).
func WithResolver(name string) FetchOpt { return func(o *fetchOptions) { o.resolver = name } }

// FetchResult is what a Fetch did.
type FetchResult struct {
	// ResumedFrom is where a partial ingest left by an earlier fetch of the
	// blob had got to; 0 for a fresh fetch or a blob stored already.
	ResumedFrom int64
}

// Fetch has keeld copy desc, a blob or manifest of ref, from its registry
// through a resolver plugin into the content store of the call's
// namespace, resuming an interrupted fetch of the same blob. It returns
// once the blob is committed, its size and digest checked.
func (c *Client) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, opts ...FetchOpt) (FetchResult, error) {
	var o fetchOptions
	for _, opt := range opts {
		opt(&o)
	}
	var cc grpc.ClientConnInterface = c.conn
	if o.resolver != "" {
		cc = metadataConn{cc: c.conn, key: keelv1.MetadataResolver, value: o.resolver}
	}
	resp, err := keelv1.NewTransferClient(cc).Fetch(ctx, &keelv1.FetchRequest{Ref: ref, Desc: &keelv1.Descriptor{
		MediaType: desc.MediaType, Digest: desc.Digest.String(), Size: desc.Size, Annotations: desc.Annotations,
	}})
	if err != nil {
		return FetchResult{}, err
	}
	return FetchResult{ResumedFrom: resp.ResumedFrom}, nil
}
