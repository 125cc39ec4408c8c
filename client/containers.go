package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// ContainerInfo is a container record.
type ContainerInfo struct {
	ID          string
	Image       string
	Snapshotter string
	SnapshotKey string
	Spec        *specs.Spec
	Runtime     string
	// RuntimeOptions are the runtime plugin's own options, as JSON.
	RuntimeOptions json.RawMessage
	Labels         map[string]string
	// Network is the container's network attachment (network.go); nil
	// follows the spec.
	Network   *ContainerNetwork
	CreatedAt time.Time
	UpdatedAt time.Time

	// prepared is the snapshot WithNewSnapshot made, which NewContainer
	// removes again if the container is not recorded.
	prepared string
}

// Container is a container record in keeld, with its task.
type Container struct {
	c    *Client
	info ContainerInfo
}

// NewContainerOpt fills a container before it is recorded.
type NewContainerOpt func(ctx context.Context, c *Client, info *ContainerInfo) error

// WithImage records the image the container comes from.
func WithImage(img Image) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.Image = img.Name
		return nil
	}
}

// WithSnapshotter names the snapshotter of the container's rootfs
// (keeld's default when unset); give it before WithNewSnapshot.
func WithSnapshotter(name string) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.Snapshotter = name
		return nil
	}
}

// WithNewSnapshot prepares an active snapshot key on the image's unpacked
// rootfs as the container's rootfs, unpacking the image first when it is
// not unpacked on the snapshotter (imported, or pulled elsewhere).
func WithNewSnapshot(key string, img Image) NewContainerOpt {
	return func(ctx context.Context, c *Client, info *ContainerInfo) error {
		chain, err := c.LocalImage(img).ChainID(ctx)
		if err != nil {
			return err
		}
		sn := c.SnapshotService(info.Snapshotter)
		if _, err := sn.Stat(ctx, chain.String()); errdefs.IsNotFound(err) {
			if _, err := c.UnpackImage(ctx, img.Name, info.Snapshotter, ""); err != nil {
				return fmt.Errorf("container %q: %w", info.ID, err)
			}
		} else if err != nil {
			return fmt.Errorf("container %q: rootfs of image %s: %w", info.ID, img.Name, err)
		}
		if _, err := sn.Prepare(ctx, key, chain.String(), snapshot.WithLabels(map[string]string{"io.keel/container": info.ID})); err != nil {
			return fmt.Errorf("container %q: rootfs snapshot %q on %s: %w", info.ID, key, chain, err)
		}
		info.SnapshotKey, info.prepared = key, key
		return nil
	}
}

// WithSnapshot uses an existing snapshot as the rootfs.
func WithSnapshot(key string) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.SnapshotKey = key
		return nil
	}
}

// WithNewSpec generates the container's spec from sdk/runtime's safe
// default and opts. Given after WithNewSnapshot (or WithSnapshot), the
// options that read the image's files (user and group names) read the
// container's snapshot, mounted read-only meanwhile.
func WithNewSpec(opts ...oci.SpecOpt) NewContainerOpt {
	return func(ctx context.Context, c *Client, info *ContainerInfo) (err error) {
		if info.SnapshotKey != "" {
			rootfs := &snapshotRootFS{c: c, snapshotter: info.Snapshotter, key: info.SnapshotKey}
			defer func() {
				if cerr := rootfs.close(); cerr != nil && err == nil {
					err = cerr
				}
			}()
			ctx = oci.WithRootFS(ctx, rootfs.open)
		}
		s, err := oci.GenerateSpec(ctx, opts...)
		if err != nil {
			return err
		}
		info.Spec = s
		return nil
	}
}

// WithSpec sets the spec as given: no seccomp profile unless it has one
// (oci.WithDefaultSeccomp gives Docker's, as WithNewSpec does).
func WithSpec(s *specs.Spec) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.Spec = s
		return nil
	}
}

// WithRuntime names the runtime plugin (keeld's only one when unset) and
// its options (marshalled as JSON; nil for none).
func WithRuntime(name string, options any) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.Runtime = name
		if options != nil {
			b, err := json.Marshal(options)
			if err != nil {
				return fmt.Errorf("runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
			}
			info.RuntimeOptions = b
		}
		return nil
	}
}

// WithContainerLabels sets the container's labels.
func WithContainerLabels(labels map[string]string) NewContainerOpt {
	return func(_ context.Context, _ *Client, info *ContainerInfo) error {
		info.Labels = labels
		return nil
	}
}

// NewContainer records a container. A snapshot WithNewSnapshot prepared is
// removed again if an option fails or the record cannot be made.
//
// The whole creation runs under a short lease (unless ctx carries one), so
// a collection between the snapshot's Prepare and the record cannot take
// the snapshot.
func (c *Client) NewContainer(ctx context.Context, id string, opts ...NewContainerOpt) (*Container, error) {
	// Before a lease or snapshot is made under it.
	if err := runtime.ValidateContainerID(id); err != nil {
		return nil, err
	}
	if callScope(ctx).Lease == "" {
		l, err := c.CreateLease(ctx, WithLeaseExpiration(time.Hour), WithLeaseLabels(map[string]string{"io.keel/container": id}))
		if err != nil {
			return nil, err
		}
		defer c.DeleteLease(context.WithoutCancel(ctx), l.ID)
		ctx = WithLease(ctx, l.ID)
	}
	info := ContainerInfo{ID: id}
	recorded := false
	defer func() {
		if info.prepared != "" && !recorded {
			c.SnapshotService(info.Snapshotter).Remove(context.WithoutCancel(ctx), info.prepared)
		}
	}()
	for _, o := range opts {
		if err := o(ctx, c, &info); err != nil {
			return nil, err
		}
	}
	if info.Spec == nil {
		s, err := oci.GenerateSpec(ctx)
		if err != nil {
			return nil, err
		}
		info.Spec = s
	}
	if err := applyNetworkSpec(ctx, &info); err != nil {
		return nil, err
	}
	p, err := containerToProto(info)
	if err != nil {
		return nil, err
	}
	resp, err := keelv1.NewContainersClient(c.conn).Create(ctx, &keelv1.CreateContainerRequest{Container: p})
	if err != nil {
		return nil, err
	}
	recorded = true
	out, err := containerFromProto(resp)
	if err != nil {
		return nil, err
	}
	return &Container{c: c, info: out}, nil
}

// LoadContainer returns the container id.
func (c *Client) LoadContainer(ctx context.Context, id string) (*Container, error) {
	resp, err := keelv1.NewContainersClient(c.conn).Get(ctx, &keelv1.GetContainerRequest{Id: id})
	if err != nil {
		return nil, err
	}
	info, err := containerFromProto(resp)
	if err != nil {
		return nil, err
	}
	return &Container{c: c, info: info}, nil
}

// Containers lists the containers matching any of filters.
func (c *Client) Containers(ctx context.Context, filters ...string) ([]*Container, error) {
	resp, err := keelv1.NewContainersClient(c.conn).List(ctx, &keelv1.ListContainersRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	out := make([]*Container, 0, len(resp.Containers))
	for _, p := range resp.Containers {
		info, err := containerFromProto(p)
		if err != nil {
			return nil, err
		}
		out = append(out, &Container{c: c, info: info})
	}
	return out, nil
}

// ID is the container's id.
func (ct *Container) ID() string { return ct.info.ID }

// Info is the container's record as last read.
func (ct *Container) Info() ContainerInfo { return ct.info }

// SetLabels merges labels into the container's (an empty value removes
// one) and returns them all.
func (ct *Container) SetLabels(ctx context.Context, labels map[string]string) (map[string]string, error) {
	var paths []string
	for k := range labels {
		paths = append(paths, "labels."+k)
	}
	resp, err := keelv1.NewContainersClient(ct.c.conn).Update(ctx, &keelv1.UpdateContainerRequest{
		Container: &keelv1.Container{Id: ct.info.ID, Labels: labels}, FieldPaths: paths,
	})
	if err != nil {
		return nil, err
	}
	info, err := containerFromProto(resp)
	if err != nil {
		return nil, err
	}
	ct.info = info
	return info.Labels, nil
}

// DeleteOpts of a container.
type ContainerDeleteOpt func(*keelv1.DeleteContainerRequest)

// WithForce deletes the container even while its task runs (killing it).
func WithForce(r *keelv1.DeleteContainerRequest) { r.Force = true }

// Delete removes the container record and the snapshot WithNewSnapshot
// made for it (any other snapshot goes with the next collection). FailedPrecondition while its task runs, unless WithForce.
func (ct *Container) Delete(ctx context.Context, opts ...ContainerDeleteOpt) error {
	req := &keelv1.DeleteContainerRequest{Id: ct.info.ID}
	for _, o := range opts {
		o(req)
	}
	_, err := keelv1.NewContainersClient(ct.c.conn).Delete(ctx, req)
	return err
}

func containerToProto(info ContainerInfo) (*keelv1.Container, error) {
	spec, err := json.Marshal(info.Spec)
	if err != nil {
		return nil, fmt.Errorf("container %q: spec: %v: %w", info.ID, err, errdefs.ErrInvalidArgument)
	}
	return &keelv1.Container{
		Id: info.ID, Image: info.Image, Snapshotter: info.Snapshotter, SnapshotKey: info.SnapshotKey,
		Spec: spec, Runtime: info.Runtime, RuntimeOptions: info.RuntimeOptions, Labels: info.Labels,
		Network: networkToProto(info.Network),
	}, nil
}

func containerFromProto(p *keelv1.Container) (ContainerInfo, error) {
	info := ContainerInfo{
		ID: p.Id, Image: p.Image, Snapshotter: p.Snapshotter, SnapshotKey: p.SnapshotKey,
		Runtime: p.Runtime, RuntimeOptions: p.RuntimeOptions, Labels: p.Labels, Network: networkFromProto(p.Network),
		CreatedAt: p.CreatedAt.AsTime(), UpdatedAt: p.UpdatedAt.AsTime(),
	}
	if len(p.Spec) > 0 {
		info.Spec = &specs.Spec{}
		if err := json.Unmarshal(p.Spec, info.Spec); err != nil {
			return ContainerInfo{}, fmt.Errorf("container %q: spec: %v: %w", p.Id, err, errdefs.ErrDataLoss)
		}
	}
	return info, nil
}
