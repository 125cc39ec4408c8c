package server

import (
	"context"
	"fmt"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// transferService serves Transfer: registry content into keeld's content
// store, through the resolver a call names.
type transferService struct {
	keelv1.UnimplementedTransferServer
	s *Server
}

func (t transferService) Fetch(ctx context.Context, req *keelv1.FetchRequest) (*keelv1.FetchResponse, error) {
	if req.Ref == "" || req.Desc == nil || req.Desc.Digest == "" {
		return nil, fmt.Errorf("fetch needs a reference and a descriptor with a digest: %w", errdefs.ErrInvalidArgument)
	}
	desc := descriptorFromProto(req.Desc)
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("fetch %s: digest %q: %v: %w", req.Ref, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if t.s.content == nil {
		return nil, fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	r, err := t.s.resolver(ctx)
	if err != nil {
		return nil, err
	}
	// What a previous fetch left, for the answer; Fetch itself resumes it.
	var resumed int64
	if st, err := t.s.content.Status(ctx, images.IngestRef(desc)); err == nil && st.Offset <= desc.Size {
		resumed = st.Offset
	}
	if err := images.Fetch(ctx, r, t.s.content, req.Ref, desc); err != nil {
		return nil, err
	}
	return &keelv1.FetchResponse{ResumedFrom: resumed}, nil
}
