package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/containerd/platforms"
	"google.golang.org/grpc"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// registerExchange serves Exchange (push, export, import) and ImageMounts.
func (s *Server) registerExchange(srv *grpc.Server) {
	keelv1.RegisterExchangeServer(srv, exchangeService{s: s})
	keelv1.RegisterImageMountsServer(srv, imageMountsService{s: s})
}

type exchangeService struct {
	keelv1.UnimplementedExchangeServer
	s *Server
}

func (e exchangeService) needContent() error {
	if e.s.content == nil {
		return fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	return nil
}

func (e exchangeService) Push(req *keelv1.PushRequest, stream grpc.ServerStreamingServer[keelv1.PushProgress]) error {
	ctx := stream.Context()
	if req.Ref == "" {
		return fmt.Errorf("push needs a reference: %w", errdefs.ErrInvalidArgument)
	}
	if err := e.needContent(); err != nil {
		return err
	}
	name := req.Name
	if name == "" {
		name = req.Ref
	}
	img, err := images.Lookup(ctx, e.s.db.Images(), name)
	if err != nil {
		return err
	}
	r, err := e.s.resolver(ctx)
	if err != nil {
		return err
	}
	err = images.Push(ctx, r, e.s.content, req.Ref, img.Target, images.PushOptions{
		Progress: func(p images.PushProgress) {
			// A failed send means the caller went: ctx ends the push.
			_ = stream.Send(&keelv1.PushProgress{Desc: descriptorToProto(p.Desc), Status: p.Status, Offset: p.Offset})
		},
	})
	return err
}

// chunkSender sends what is written to it as ExportChunks.
type chunkSender struct {
	stream grpc.ServerStreamingServer[keelv1.ExportChunk]
}

func (c chunkSender) Write(p []byte) (int, error) {
	// SendMsg encodes p before it returns, so the caller may reuse it.
	if err := c.stream.Send(&keelv1.ExportChunk{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (e exchangeService) Export(req *keelv1.ExportRequest, stream grpc.ServerStreamingServer[keelv1.ExportChunk]) error {
	ctx := stream.Context()
	if len(req.Names) == 0 {
		return fmt.Errorf("export needs at least one image: %w", errdefs.ErrInvalidArgument)
	}
	if err := e.needContent(); err != nil {
		return err
	}
	var imgs []images.Named
	for _, n := range req.Names {
		img, err := images.Lookup(ctx, e.s.db.Images(), n)
		if err != nil {
			return err
		}
		imgs = append(imgs, images.Named{Name: img.Name, Target: img.Target})
	}
	// Whole chunks make whole messages.
	w := bufio.NewWriterSize(chunkSender{stream: stream}, sdk.ChunkSize)
	if err := images.Export(ctx, e.s.content, w, imgs, images.ExportOptions{AllPlatforms: req.AllPlatforms}); err != nil {
		return err
	}
	return w.Flush()
}

// importReader reads the tar bytes of an Import stream.
type importReader struct {
	stream grpc.ClientStreamingServer[keelv1.ImportRequest, keelv1.ImportResponse]
	buf    []byte
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		if msg.GetOptions() != nil {
			return 0, fmt.Errorf("import: options after the data: %w", errdefs.ErrInvalidArgument)
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (e exchangeService) Import(stream grpc.ClientStreamingServer[keelv1.ImportRequest, keelv1.ImportResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("import: empty stream: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return fmt.Errorf("import: the first message must carry the options: %w", errdefs.ErrInvalidArgument)
	}
	if err := e.needContent(); err != nil {
		return err
	}
	list, err := images.Import(ctx, e.s.content, e.s.db.Images(), &importReader{stream: stream}, images.ImportOptions{
		AllPlatforms: opts.AllPlatforms,
		BaseName:     opts.BaseName,
		Leases:       e.s.db.Leases(),
		Limits:       imageLimits(e.s.cfg),
	})
	if err != nil {
		return err
	}
	if opts.Unpack {
		for _, img := range list {
			// An image with no manifest for keeld's platform is stored but
			// cannot run here: nothing to unpack.
			if _, err := e.s.unpackImage(ctx, img, ""); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
		}
	}
	resp := &keelv1.ImportResponse{}
	for _, img := range list {
		resp.Images = append(resp.Images, imageToProto(img))
	}
	return stream.SendAndClose(resp)
}

type imageMountsService struct {
	keelv1.UnimplementedImageMountsServer
	s *Server
}

// snapshotterName is the snapshotter a call names, or the default.
func (s *Server) snapshotterName(ctx context.Context) string {
	if name, ok := namespaces.Snapshotter(ctx); ok && name != "" {
		return name
	}
	return s.cfg.DefaultSnapshotter
}

func (m imageMountsService) Mount(ctx context.Context, req *keelv1.MountImageRequest) (*keelv1.MountImageResponse, error) {
	if req.Name == "" || !filepath.IsAbs(req.Target) {
		return nil, fmt.Errorf("image mount needs an image and an absolute target: %w", errdefs.ErrInvalidArgument)
	}
	if m.s.content == nil {
		return nil, fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	platform := platforms.Default()
	if req.Platform != "" {
		var err error
		if platform, err = images.ParsePlatform(req.Platform); err != nil {
			return nil, err
		}
	}
	img, err := images.Lookup(ctx, m.s.db.Images(), req.Name)
	if err != nil {
		return nil, err
	}
	sn, err := m.s.snapshotter(ctx)
	if err != nil {
		return nil, err
	}
	snName := m.s.snapshotterName(ctx)
	target := filepath.Clean(req.Target)
	ms, err := images.View(ctx, m.s.content, sn, snName, img.Name, img.Target, platform, target)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.MountImageResponse{Snapshotter: snName, Key: images.ViewKey(target)}
	for _, mt := range ms {
		resp.Mounts = append(resp.Mounts, &keelv1.Mount{Type: mt.Type, Source: mt.Source, Options: mt.Options})
	}
	return resp, nil
}

func (m imageMountsService) Unmount(ctx context.Context, req *keelv1.UnmountImageRequest) (*keelv1.UnmountImageResponse, error) {
	if !filepath.IsAbs(req.Target) {
		return nil, fmt.Errorf("image unmount needs an absolute target: %w", errdefs.ErrInvalidArgument)
	}
	key := images.ViewKey(filepath.Clean(req.Target))
	names := make([]string, 0, len(m.s.snapshotters))
	for name := range m.s.snapshotters {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		sn := m.s.snapshotters[name]
		if _, err := sn.Stat(ctx, key); errdefs.IsNotFound(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		if err := sn.Remove(ctx, key); err != nil {
			return nil, err
		}
		return &keelv1.UnmountImageResponse{}, nil
	}
	return nil, fmt.Errorf("no image view for %s: %w", req.Target, errdefs.ErrNotFound)
}
