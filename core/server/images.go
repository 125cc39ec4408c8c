package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/containerd/platforms"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/images"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/descriptor"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
)

// envGCCrash, set to "after-sweep" in a test, makes keeld SIGKILL itself
// between a collection's metadata sweep and its plugin deletes.
const envGCCrash = "KEEL_TEST_GC_CRASH"

// startGC starts the garbage collection scheduler: after removals of
// images and leases (debounced), on the configured tick, and on demand.
func (s *Server) startGC() {
	s.gc = gc.NewScheduler(publishedGC{s.keelMetrics.GC(networkedGC{s}), s}, s.cfg.GCInterval(), 0, s.logger.Named("gc"))
	s.gc.SetIngestMaxAge(s.cfg.GCIngestMaxAge())
	s.db.SetGCTrigger(s.gc.Trigger)
	// Its own collections leave plugins stopped for idleness alone (core/gc).
	s.db.SetIfRunning(pluginhost.IfRunning)
	if os.Getenv(envGCCrash) == "after-sweep" {
		s.db.SetAfterSweepHook(func() {
			s.logger.Warn("crashing between gc phases", "env", envGCCrash)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the sweep's caller never goes on: the kill lands first
		})
	}
	s.gc.Start()
}

// registerImages serves Images, Leases and GC.
func (s *Server) registerImages(srv *grpc.Server) {
	keelv1.RegisterImagesServer(srv, imagesService{store: s.images(), gc: s.gc, s: s})
	keelv1.RegisterLeasesServer(srv, leasesService{store: s.db.Leases(), gc: s.gc})
	keelv1.RegisterGCServer(srv, gcService{gc: s.gc})
}

type imagesService struct {
	keelv1.UnimplementedImagesServer
	store publishedImages
	gc    *gc.Scheduler
	s     *Server
}

func imageToProto(img metadata.Image) *keelv1.Image {
	return &keelv1.Image{
		Name:      img.Name,
		Target:    descriptor.ToProto(img.Target),
		Labels:    img.Labels,
		CreatedAt: timestamppb.New(img.CreatedAt),
		UpdatedAt: timestamppb.New(img.UpdatedAt),
	}
}

func imageFromProto(p *keelv1.Image) metadata.Image {
	if p == nil {
		return metadata.Image{}
	}
	return metadata.Image{Name: p.Name, Target: descriptor.FromProto(p.Target), Labels: p.Labels}
}

func (i imagesService) Create(ctx context.Context, req *keelv1.CreateImageRequest) (*keelv1.Image, error) {
	img, err := i.store.Create(ctx, imageFromProto(req.Image))
	if err != nil {
		return nil, err
	}
	return imageToProto(img), nil
}

func (i imagesService) Get(ctx context.Context, req *keelv1.GetImageRequest) (*keelv1.Image, error) {
	img, err := images.Lookup(ctx, i.store, req.Name)
	if err != nil {
		return nil, err
	}
	return imageToProto(img), nil
}

func (i imagesService) List(ctx context.Context, req *keelv1.ListImagesRequest) (*keelv1.ListImagesResponse, error) {
	list, err := i.store.List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListImagesResponse{}
	for _, img := range list {
		resp.Images = append(resp.Images, imageToProto(img))
	}
	return resp, nil
}

func (i imagesService) Update(ctx context.Context, req *keelv1.UpdateImageRequest) (*keelv1.Image, error) {
	upd := imageFromProto(req.Image)
	if found, err := images.Lookup(ctx, i.store, upd.Name); err == nil {
		upd.Name = found.Name
	}
	img, err := i.store.Update(ctx, upd, req.FieldPaths...)
	if err != nil {
		return nil, err
	}
	return imageToProto(img), nil
}

func (i imagesService) Delete(ctx context.Context, req *keelv1.DeleteImageRequest) (*keelv1.DeleteImageResponse, error) {
	img, err := images.Lookup(ctx, i.store, req.Name)
	if err != nil {
		return nil, err
	}
	if err := i.store.Delete(ctx, img.Name); err != nil {
		return nil, err
	}
	if req.Sync {
		if _, err := i.gc.Collect(ctx, gc.Options{}); err != nil {
			return nil, err
		}
	}
	return &keelv1.DeleteImageResponse{}, nil
}

func (i imagesService) Mount(ctx context.Context, req *keelv1.MountImageRequest) (*keelv1.MountImageResponse, error) {
	if req.Name == "" || !filepath.IsAbs(req.Target) {
		return nil, fmt.Errorf("image mount needs an image and an absolute target: %w", errdefs.ErrInvalidArgument)
	}
	if i.s.content == nil {
		return nil, fmt.Errorf("no content plugin is configured: %w", errdefs.ErrUnavailable)
	}
	platform := platforms.Default()
	if req.Platform != "" {
		var err error
		if platform, err = images.ParsePlatform(req.Platform); err != nil {
			return nil, err
		}
	}
	img, err := images.Lookup(ctx, i.s.db.Images(), req.Name)
	if err != nil {
		return nil, err
	}
	sn, err := i.s.snapshotter(ctx)
	if err != nil {
		return nil, err
	}
	snName := scope.Snapshotter(ctx)
	target := filepath.Clean(req.Target)
	ms, err := images.View(ctx, i.s.content, sn, snName, img.Name, img.Target, platform, target)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.MountImageResponse{Snapshotter: snName, Key: images.ViewKey(target)}
	resp.Mounts = mount.ToProto(ms)
	return resp, nil
}

func (i imagesService) Unmount(ctx context.Context, req *keelv1.UnmountImageRequest) (*keelv1.UnmountImageResponse, error) {
	if !filepath.IsAbs(req.Target) {
		return nil, fmt.Errorf("image unmount needs an absolute target: %w", errdefs.ErrInvalidArgument)
	}
	key := images.ViewKey(filepath.Clean(req.Target))
	names := make([]string, 0, len(i.s.snapshotters))
	for name := range i.s.snapshotters {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		sn := i.s.snapshotters[name]
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

type leasesService struct {
	keelv1.UnimplementedLeasesServer
	store *metadata.Leases
	gc    *gc.Scheduler
}

func leaseToProto(l metadata.Lease) *keelv1.Lease {
	return &keelv1.Lease{Id: l.ID, Labels: l.Labels, CreatedAt: timestamppb.New(l.CreatedAt)}
}

func resourceFromProto(r *keelv1.LeaseResource) metadata.LeaseResource {
	if r == nil {
		return metadata.LeaseResource{}
	}
	return metadata.LeaseResource{ID: r.Id, Type: r.Type}
}

func (l leasesService) Create(ctx context.Context, req *keelv1.CreateLeaseRequest) (*keelv1.Lease, error) {
	lease, err := l.store.Create(ctx, metadata.Lease{ID: req.Id, Labels: req.Labels})
	if err != nil {
		return nil, err
	}
	return leaseToProto(lease), nil
}

func (l leasesService) List(ctx context.Context, req *keelv1.ListLeasesRequest) (*keelv1.ListLeasesResponse, error) {
	list, err := l.store.List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListLeasesResponse{}
	for _, lease := range list {
		resp.Leases = append(resp.Leases, leaseToProto(lease))
	}
	return resp, nil
}

func (l leasesService) Delete(ctx context.Context, req *keelv1.DeleteLeaseRequest) (*keelv1.DeleteLeaseResponse, error) {
	if err := l.store.Delete(ctx, req.Id); err != nil {
		return nil, err
	}
	if req.Sync {
		if _, err := l.gc.Collect(ctx, gc.Options{}); err != nil {
			return nil, err
		}
	}
	return &keelv1.DeleteLeaseResponse{}, nil
}

func (l leasesService) AddResource(ctx context.Context, req *keelv1.AddLeaseResourceRequest) (*keelv1.AddLeaseResourceResponse, error) {
	if err := l.store.AddResource(ctx, req.Id, resourceFromProto(req.Resource)); err != nil {
		return nil, err
	}
	return &keelv1.AddLeaseResourceResponse{}, nil
}

func (l leasesService) DeleteResource(ctx context.Context, req *keelv1.DeleteLeaseResourceRequest) (*keelv1.DeleteLeaseResourceResponse, error) {
	if err := l.store.DeleteResource(ctx, req.Id, resourceFromProto(req.Resource)); err != nil {
		return nil, err
	}
	return &keelv1.DeleteLeaseResourceResponse{}, nil
}

func (l leasesService) ListResources(ctx context.Context, req *keelv1.ListLeaseResourcesRequest) (*keelv1.ListLeaseResourcesResponse, error) {
	list, err := l.store.ListResources(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListLeaseResourcesResponse{}
	for _, r := range list {
		resp.Resources = append(resp.Resources, &keelv1.LeaseResource{Id: r.ID, Type: r.Type})
	}
	return resp, nil
}

type gcService struct {
	keelv1.UnimplementedGCServer
	gc *gc.Scheduler
}

func gcObjectToProto(o gc.Object) *keelv1.GCObject {
	return &keelv1.GCObject{Kind: string(o.Kind), Namespace: o.Namespace, Name: o.Name, Root: o.Root, Reason: o.Reason, Size: o.Size}
}

func (g gcService) Collect(ctx context.Context, req *keelv1.CollectRequest) (*keelv1.CollectResponse, error) {
	rep, err := g.gc.Collect(ctx, gc.Options{DryRun: req.DryRun, Ingests: req.Ingests})
	if err != nil {
		return nil, err
	}
	resp := &keelv1.CollectResponse{Errors: rep.Errors, DurationNs: int64(rep.Duration)}
	for _, o := range rep.Removed {
		resp.Removed = append(resp.Removed, gcObjectToProto(o))
	}
	for _, o := range rep.Kept {
		resp.Kept = append(resp.Kept, gcObjectToProto(o))
	}
	return resp, nil
}
