package cri

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// containerTopics are the keeld topics a CRI container event comes from.
const containerTopics = `^/(containers/(create|delete)|tasks/(start|exit))$`

// GetContainerEvents streams the lifecycle of the pods and their
// containers as containerd's CRI does (a pod sandbox's events name the
// sandbox as the container), each with its pod's status and its
// containers' statuses when the event is sent. The events are keeld's
// (/containers/create|delete, /tasks/start|exit of the CRI's namespace),
// so every keel-cri sees every change, made through it or not. Events
// keeld could not deliver end the stream with Aborted: the caller lists
// again rather than trust a stream with a hole in it.
func (r *runtimeService) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ctx := stream.Context()
	filter := fmt.Sprintf(`namespace==%q,topic~=%q`, r.s.c.Namespace(), containerTopics)
	evs, errs, err := r.s.c.Subscribe(ctx, client.WithEventFilters(filter))
	if err != nil {
		return err
	}
	// Listed after subscribing, so a container is in the list, in the
	// events, or both. A delete event names only the container: pods
	// remembers each one's pod (a sandbox's is itself).
	pods := map[string]string{}
	all, err := r.s.c.Containers(ctx)
	if err != nil {
		return err
	}
	for _, ct := range all {
		if pod, ok := podOf(ct.ID(), ct.Info().Labels); ok {
			pods[ct.ID()] = pod
		}
	}
	// The header tells the caller the stream is established: an event
	// after it arrived is in the stream.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for ev := range evs {
		if ev.Missed != nil {
			return fmt.Errorf("keeld lost %d events of this stream (restarted: %t): %w", ev.Missed.Count, ev.Missed.Restarted, errdefs.ErrAborted)
		}
		id, typ, ok := containerEventOf(ev, pods)
		if !ok {
			continue
		}
		resp := &runtimeapi.ContainerEventResponse{
			ContainerId: id, ContainerEventType: typ, CreatedAt: ev.Timestamp.UnixNano(),
		}
		resp.PodSandboxStatus, resp.ContainersStatuses = r.podStatuses(ctx, pods[id])
		if typ == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
			delete(pods, id)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return <-errs
}

// podOf is the pod of the keel container id with labels: its sandbox's
// id, or its own for a sandbox; ok false for a container the CRI did not
// make.
func podOf(id string, labels map[string]string) (string, bool) {
	switch labels[LabelKind] {
	case KindSandbox:
		return id, true
	case KindContainer:
		return labels[LabelSandboxID], labels[LabelSandboxID] != ""
	}
	return "", false
}

// containerEventOf is the CRI event keeld's event ev makes, for the
// container id (ok false for none: an exec's, or a container the CRI did
// not make); pods learns the pod of a created container.
func containerEventOf(ev client.Event, pods map[string]string) (id string, typ runtimeapi.ContainerEventType, ok bool) {
	switch p := ev.Payload.(type) {
	case *keelv1.ContainerEvent:
		id = p.GetId()
		switch ev.Topic {
		case "/containers/create":
			pod, known := podOf(id, p.GetLabels())
			if !known {
				return "", 0, false
			}
			pods[id] = pod
			typ = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
		case "/containers/delete":
			typ = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
		default:
			return "", 0, false
		}
	case *keelv1.TaskEvent:
		if p.GetExecId() != "" {
			return "", 0, false
		}
		id = p.GetId()
		switch ev.Topic {
		case runtime.TopicStart:
			typ = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		case runtime.TopicExit:
			typ = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		default:
			return "", 0, false
		}
	default:
		return "", 0, false
	}
	_, known := pods[id]
	return id, typ, known
}

// podStatuses are pod's status (nil once it is gone) and its containers'
// as the event's sender sees them, as containerd sends them: what cannot
// be read is left out rather than failing the stream.
func (r *runtimeService) podStatuses(ctx context.Context, pod string) (*runtimeapi.PodSandboxStatus, []*runtimeapi.ContainerStatus) {
	var sbStatus *runtimeapi.PodSandboxStatus
	if resp, err := r.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod}); err == nil {
		sbStatus = resp.GetStatus()
	} else if !errdefs.IsNotFound(err) {
		r.s.logger.Debug("container event: pod status", "pod", pod, "error", err)
	}
	statuses := []*runtimeapi.ContainerStatus{}
	members, err := r.podContainers(ctx, pod)
	if err != nil {
		r.s.logger.Debug("container event: pod's containers", "pod", pod, "error", err)
		return sbStatus, statuses
	}
	for _, ct := range members {
		resp, err := r.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.ID()})
		if err != nil {
			continue // removed meanwhile
		}
		statuses = append(statuses, resp.GetStatus())
	}
	return sbStatus, statuses
}
