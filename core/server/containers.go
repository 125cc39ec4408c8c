package server

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

type containersService struct {
	keelv1.UnimplementedContainersServer
	s *Server
}

func containerToProto(c metadata.Container) *keelv1.Container {
	out := &keelv1.Container{
		Id: c.ID, Image: c.Image, Snapshotter: c.Snapshotter, SnapshotKey: c.SnapshotKey,
		Spec: c.Spec, Runtime: c.Runtime, RuntimeOptions: c.RuntimeOptions, Labels: c.Labels,
		CreatedAt: timestamppb.New(c.CreatedAt), UpdatedAt: timestamppb.New(c.UpdatedAt),
	}
	out.Network, _ = containerNetwork(c) // recorded by Create, which checked it
	return out
}

func containerFromProto(c *keelv1.Container) metadata.Container {
	if c == nil {
		return metadata.Container{}
	}
	return metadata.Container{
		ID: c.Id, Image: c.Image, Snapshotter: c.Snapshotter, SnapshotKey: c.SnapshotKey,
		Spec: c.Spec, Runtime: c.Runtime, RuntimeOptions: c.RuntimeOptions, Labels: c.Labels,
	}
}

func (cs containersService) Create(ctx context.Context, req *keelv1.CreateContainerRequest) (*keelv1.Container, error) {
	c := containerFromProto(req.Container)
	if n := req.Container.GetNetwork(); n.GetMode() == keelv1.NetworkMode_NETWORK_MODE_CNI && len(n.Networks) == 0 {
		n.Networks = []string{cs.s.net.DefaultName()}
	}
	if err := cs.s.validateNetwork(c.ID, req.Container.GetNetwork()); err != nil {
		return nil, err
	}
	if n := req.Container.GetNetwork(); n != nil {
		c.Network, _ = proto.Marshal(n)
	}
	// The runtime is fixed at creation, so a later config change does not
	// move a container's task to another plugin.
	if c.Runtime == "" {
		name, err := cs.s.defaultRuntime()
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", c.ID, err)
		}
		c.Runtime = name
	}
	if _, ok := cs.s.runtimes[c.Runtime]; !ok {
		return nil, fmt.Errorf("container %q: runtime %q is not configured: %w", c.ID, c.Runtime, errdefs.ErrNotFound)
	}
	if c.SnapshotKey != "" && c.Snapshotter == "" {
		c.Snapshotter = cs.s.cfg.DefaultSnapshotter
	}
	if c.Snapshotter != "" {
		if _, ok := cs.s.snapshotters[c.Snapshotter]; !ok {
			return nil, fmt.Errorf("container %q: snapshotter %q is not configured: %w", c.ID, c.Snapshotter, errdefs.ErrNotFound)
		}
	}
	out, err := cs.s.db.Containers().Create(ctx, c)
	if err != nil {
		return nil, err
	}
	cs.s.publish(ctx, events.TopicContainerCreate, containerEvent(out))
	return containerToProto(out), nil
}

func (cs containersService) Get(ctx context.Context, req *keelv1.GetContainerRequest) (*keelv1.Container, error) {
	c, err := cs.s.db.Containers().Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return containerToProto(c), nil
}

func (cs containersService) List(ctx context.Context, req *keelv1.ListContainersRequest) (*keelv1.ListContainersResponse, error) {
	list, err := cs.s.db.Containers().List(ctx, req.Filters...)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListContainersResponse{}
	for _, c := range list {
		resp.Containers = append(resp.Containers, containerToProto(c))
	}
	return resp, nil
}

func (cs containersService) Update(ctx context.Context, req *keelv1.UpdateContainerRequest) (*keelv1.Container, error) {
	c, err := cs.s.db.Containers().Update(ctx, containerFromProto(req.Container), req.FieldPaths...)
	if err != nil {
		return nil, err
	}
	cs.s.publish(ctx, events.TopicContainerUpdate, containerEvent(c))
	return containerToProto(c), nil
}

// forceKillTimeout bounds how long a forced removal waits for a killed task.
const forceKillTimeout = 10 * time.Second

// Delete refuses a container whose task is not stopped unless force, which
// SIGKILLs the task's processes; a stopped task is deleted with the record.
func (cs containersService) Delete(ctx context.Context, req *keelv1.DeleteContainerRequest) (*keelv1.DeleteContainerResponse, error) {
	c, err := cs.s.db.Containers().Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if err := cs.s.removeTask(ctx, c, req.Force); err != nil {
		return nil, err
	}
	if err := cs.s.db.Containers().Delete(ctx, req.Id); err != nil {
		return nil, err
	}
	cs.s.publish(ctx, events.TopicContainerDelete, events.Container{ID: req.Id})
	if err := cs.s.removeContainerState(ctx, req.Id); err != nil {
		return nil, err
	}
	if err := cs.s.removeContainerLog(ctx, req.Id); err != nil {
		return nil, err
	}
	cs.s.removeContainerSnapshot(ctx, c)
	return &keelv1.DeleteContainerResponse{}, nil
}

// containerLabel marks the snapshot the client prepared for a container
// (client.WithNewSnapshot): it is the container's own.
const containerLabel = "io.keel/container"

// removeContainerSnapshot removes the snapshot made for c with it, as
// ctr's container delete does, so that a container of the same id can be
// made at once. Any other snapshot, or one this cannot remove (a child
// made of it), is left to the collection.
func (s *Server) removeContainerSnapshot(ctx context.Context, c metadata.Container) {
	sn, ok := s.snapshotters[c.Snapshotter]
	if !ok || c.SnapshotKey == "" {
		return
	}
	info, err := sn.Stat(ctx, c.SnapshotKey)
	if err != nil || info.Labels[containerLabel] != c.ID {
		return
	}
	if err := sn.Remove(ctx, c.SnapshotKey); err != nil && !errdefs.IsNotFound(err) {
		s.logger.Warn("container deleted; its snapshot is left to the collection", "container", c.ID, "snapshot", c.SnapshotKey, "error", err)
	}
}

// removeTask deletes c's task, if any, before its record goes: a running one
// only with force (killed first).
func (s *Server) removeTask(ctx context.Context, c metadata.Container, force bool) error {
	rt, err := s.runtime(c.Runtime)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil // its runtime is gone from the config: nothing to stop
		}
		return err
	}
	tid, err := taskID(ctx, c.ID)
	if err != nil {
		return err
	}
	st, err := rt.State(ctx, tid, "")
	if errdefs.IsNotFound(err) {
		s.teardownNetwork(ctx, tid)
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status != runtime.StatusStopped {
		if !force {
			return fmt.Errorf("container %q has a %s task: kill and delete it first, or force: %w", c.ID, st.Status, errdefs.ErrFailedPrecondition)
		}
		if st.Status == runtime.StatusPaused || st.Status == runtime.StatusPausing {
			_ = rt.Resume(ctx, tid)
		}
		if err := rt.Kill(ctx, tid, "", syscall.SIGKILL, true); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
			return fmt.Errorf("container %q: kill its task: %w", c.ID, err)
		}
		wctx, cancel := context.WithTimeout(ctx, forceKillTimeout)
		_, err := rt.Wait(wctx, tid, "")
		cancel()
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %q: wait for its killed task: %w", c.ID, err)
		}
	}
	if _, err := rt.Delete(ctx, tid, ""); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %q: delete its task: %w", c.ID, err)
	}
	s.teardownNetwork(ctx, tid)
	return nil
}

var errNoRuntime = errors.New("no runtime plugin is configured")
