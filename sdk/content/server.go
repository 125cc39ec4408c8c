package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// listBatch is how many infos or statuses one list message carries.
const listBatch = 256

// server serves a Store over gRPC.
type server struct {
	pluginv1.UnimplementedContentServer
	impl func(context.Context) (Store, error)
}

// NewServer serves the store impl returns for a call; impl may fail, e.g.
// before the plugin is configured. keeld picks the backend from the call's
// context.
func newServer(impl func(context.Context) (Store, error)) *server {
	return &server{impl: impl}
}

var _ pluginv1.ContentServer = (*server)(nil)

func (s *server) Info(ctx context.Context, req *pluginv1.ContentInfoRequest) (*pluginv1.ContentInfo, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	dgst, err := parseDigest(req.Digest)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return infoToProto(info), nil
}

func (s *server) Update(ctx context.Context, req *pluginv1.UpdateContentRequest) (*pluginv1.ContentInfo, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	info := infoFromProto(req.Info)
	if _, err := parseDigest(info.Digest.String()); err != nil {
		return nil, err
	}
	info, err = st.Update(ctx, info, req.FieldPaths...)
	if err != nil {
		return nil, err
	}
	return infoToProto(info), nil
}

func (s *server) List(req *pluginv1.ListContentRequest, stream grpc.ServerStreamingServer[pluginv1.ListContentResponse]) error {
	st, err := s.impl(stream.Context())
	if err != nil {
		return err
	}
	var batch []*pluginv1.ContentInfo
	err = st.Walk(stream.Context(), func(info Info) error {
		batch = append(batch, infoToProto(info))
		if len(batch) < listBatch {
			return nil
		}
		err := stream.Send(&pluginv1.ListContentResponse{Infos: batch})
		batch = nil
		return err
	}, req.Filters...)
	if err == nil && len(batch) > 0 {
		err = stream.Send(&pluginv1.ListContentResponse{Infos: batch})
	}
	return err
}

func (s *server) Delete(ctx context.Context, req *pluginv1.ContentInfoRequest) (*pluginv1.Empty, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	dgst, err := parseDigest(req.Digest)
	if err != nil {
		return nil, err
	}
	return &pluginv1.Empty{}, st.Delete(ctx, dgst)
}

// Read streams the range in ChunkSize messages, reusing one buffer: Send
// has marshaled the message when it returns.
func (s *server) Read(req *pluginv1.ReadContentRequest, stream grpc.ServerStreamingServer[pluginv1.ReadContentResponse]) error {
	ctx := stream.Context()
	st, err := s.impl(ctx)
	if err != nil {
		return err
	}
	dgst, err := parseDigest(req.Digest)
	if err != nil {
		return err
	}
	if req.Offset < 0 || req.Size < 0 {
		return fmt.Errorf("read %s: negative offset or size: %w", dgst, errdefs.ErrInvalidArgument)
	}
	ra, err := st.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst})
	if err != nil {
		return err
	}
	defer ra.Close()
	end := ra.Size()
	if req.Offset > end {
		return fmt.Errorf("read %s: offset %d past size %d: %w", dgst, req.Offset, end, errdefs.ErrOutOfRange)
	}
	if req.Size > 0 && req.Offset+req.Size < end {
		end = req.Offset + req.Size
	}
	buf := make([]byte, min(sdk.ChunkSize, end-req.Offset))
	for off := req.Offset; off < end; {
		n, err := ra.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if n > 0 {
			if err := stream.Send(&pluginv1.ReadContentResponse{Offset: off, Data: buf[:n]}); err != nil {
				return err
			}
			off += int64(n)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off == end) {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("read %s: short blob at %d: %w", dgst, off, errdefs.ErrDataLoss)
			}
			return err
		}
	}
	return nil
}

func (s *server) Status(ctx context.Context, req *pluginv1.IngestRefRequest) (*pluginv1.IngestStatus, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	status, err := st.Status(ctx, req.Ref)
	if err != nil {
		return nil, err
	}
	return statusToProto(status), nil
}

func (s *server) ListStatuses(req *pluginv1.ListStatusesRequest, stream grpc.ServerStreamingServer[pluginv1.ListStatusesResponse]) error {
	st, err := s.impl(stream.Context())
	if err != nil {
		return err
	}
	statuses, err := st.ListStatuses(stream.Context(), req.Filters...)
	if err != nil {
		return err
	}
	for len(statuses) > 0 {
		n := min(len(statuses), listBatch)
		resp := &pluginv1.ListStatusesResponse{}
		for _, status := range statuses[:n] {
			resp.Statuses = append(resp.Statuses, statusToProto(status))
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		statuses = statuses[n:]
	}
	return nil
}

func (s *server) Abort(ctx context.Context, req *pluginv1.IngestRefRequest) (*pluginv1.Empty, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	return &pluginv1.Empty{}, st.Abort(ctx, req.Ref)
}

func (s *server) BlobPath(ctx context.Context, req *pluginv1.ContentInfoRequest) (*pluginv1.BlobPathResponse, error) {
	st, err := s.impl(ctx)
	if err != nil {
		return nil, err
	}
	bp, ok := st.(BlobPather)
	if !ok {
		return nil, fmt.Errorf("blob path: %w", errdefs.ErrNotImplemented)
	}
	dgst, err := digest.Parse(req.Digest)
	if err != nil {
		return nil, fmt.Errorf("digest %q: %v: %w", req.Digest, err, errdefs.ErrInvalidArgument)
	}
	path, err := bp.BlobPath(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return &pluginv1.BlobPathResponse{Path: path}, nil
}

// Write holds one ingest for the life of the stream: the first message
// names the ref, and each message gets one response.
func (s *server) Write(stream grpc.BidiStreamingServer[pluginv1.WriteContentRequest, pluginv1.WriteContentResponse]) error {
	return s.write(stream)
}

func (s *server) write(stream grpc.BidiStreamingServer[pluginv1.WriteContentRequest, pluginv1.WriteContentResponse]) error {
	ctx := stream.Context()
	st, err := s.impl(ctx)
	if err != nil {
		return err
	}
	req, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	ref := req.Ref
	total := req.Total
	expected, err := parseOptionalDigest(req.Expected)
	if err != nil {
		return err
	}
	w, err := st.Writer(ctx, WithRef(ref), WithDescriptor(ocispec.Descriptor{Size: total, Digest: expected}))
	if err != nil {
		return err
	}
	defer w.Close()
	// The offset is kept here, not asked of w per message: w may be a
	// writer across another stream (keeld's API over a plugin), where each
	// Status is a round trip. Once the client writes the file itself, the
	// data grows outside this stream and only w knows its end.
	status, err := w.Status()
	if err != nil {
		return err
	}
	pathGiven := false
	for {
		if req.Ref != "" && req.Ref != ref {
			return fmt.Errorf("write %q: ref changed to %q: %w", ref, req.Ref, errdefs.ErrInvalidArgument)
		}
		if req.Total != 0 {
			total = req.Total
		}
		if req.Expected != "" {
			if expected, err = parseOptionalDigest(req.Expected); err != nil {
				return err
			}
		}
		resp := &pluginv1.WriteContentResponse{Action: req.Action}
		withDigest := true
		switch req.Action {
		case pluginv1.WriteAction_WRITE_ACTION_STAT:
			if status, err = w.Status(); err != nil {
				return err
			}
			if req.WantPath {
				if ip, ok := st.(IngestPather); ok {
					if resp.Path, err = ip.IngestPath(ctx, w); err != nil {
						return err
					}
					pathGiven = true
				}
			}
		case pluginv1.WriteAction_WRITE_ACTION_WRITE:
			if pathGiven {
				if status, err = w.Status(); err != nil {
					return err
				}
			}
			if req.Offset != status.Offset {
				return fmt.Errorf("write %q: offset %d, ingest is at %d: %w", ref, req.Offset, status.Offset, errdefs.ErrInvalidArgument)
			}
			n, err := w.Write(req.Data)
			if err != nil {
				return err
			}
			status.Offset += int64(n)
			status.UpdatedAt = time.Now()
			withDigest = false
		case pluginv1.WriteAction_WRITE_ACTION_TRUNCATE:
			if err := w.Truncate(req.Offset); err != nil {
				return err
			}
			if status, err = w.Status(); err != nil {
				return err
			}
		case pluginv1.WriteAction_WRITE_ACTION_COMMIT:
			if status, err = w.Status(); err != nil {
				return err
			}
			if err := w.Commit(ctx, total, expected, WithLabels(req.Labels)); err != nil {
				return err
			}
			status.UpdatedAt = time.Now()
		default:
			return fmt.Errorf("write %q: unknown action %v: %w", ref, req.Action, errdefs.ErrInvalidArgument)
		}
		resp.Offset, resp.Total = status.Offset, status.Total
		if total != 0 {
			resp.Total = total
		}
		resp.StartedAt, resp.UpdatedAt = wire.UnixNano(status.StartedAt), wire.UnixNano(status.UpdatedAt)
		if withDigest {
			resp.Digest = w.Digest().String()
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if req, err = stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("digest %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

func parseOptionalDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", nil
	}
	return parseDigest(s)
}

// infoToProto converts an Info for the wire.
func infoToProto(info Info) *pluginv1.ContentInfo {
	return &pluginv1.ContentInfo{
		Digest:    info.Digest.String(),
		Size:      info.Size,
		CreatedAt: wire.UnixNano(info.CreatedAt),
		UpdatedAt: wire.UnixNano(info.UpdatedAt),
		Labels:    info.Labels,
	}
}

// infoFromProto converts an Info from the wire.
func infoFromProto(p *pluginv1.ContentInfo) Info {
	if p == nil {
		return Info{}
	}
	return Info{
		Digest:    digest.Digest(p.Digest),
		Size:      p.Size,
		CreatedAt: wire.Time(p.CreatedAt),
		UpdatedAt: wire.Time(p.UpdatedAt),
		Labels:    p.Labels,
	}
}

// statusToProto converts a Status for the wire.
func statusToProto(s Status) *pluginv1.IngestStatus {
	return &pluginv1.IngestStatus{
		Ref:       s.Ref,
		Offset:    s.Offset,
		Total:     s.Total,
		Expected:  s.Expected.String(),
		StartedAt: wire.UnixNano(s.StartedAt),
		UpdatedAt: wire.UnixNano(s.UpdatedAt),
	}
}

// statusFromProto converts a Status from the wire.
func statusFromProto(p *pluginv1.IngestStatus) Status {
	if p == nil {
		return Status{}
	}
	return Status{
		Ref:       p.Ref,
		Offset:    p.Offset,
		Total:     p.Total,
		Expected:  digest.Digest(p.Expected),
		StartedAt: wire.Time(p.StartedAt),
		UpdatedAt: wire.Time(p.UpdatedAt),
	}
}
