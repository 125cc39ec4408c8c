package server

import (
	"context"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// publish publishes an event of the call's namespace.
func (s *Server) publish(ctx context.Context, topic string, ev any) {
	ns, _ := scope.Namespace(ctx)
	s.events.Publish(ns, topic, ev)
}

func imageEvent(img metadata.Image) events.Image {
	return events.Image{Name: img.Name, Target: img.Target.Digest.String(), Labels: img.Labels}
}

func containerEvent(c metadata.Container) events.Container {
	return events.Container{
		ID: c.ID, Image: c.Image, Runtime: c.Runtime, Snapshotter: c.Snapshotter, SnapshotKey: c.SnapshotKey, Labels: c.Labels,
	}
}

// publishedImages is the image store that publishes /images/create and
// /images/update (imports use it).
type publishedImages struct {
	*metadata.Images
	s *Server
}

func (s *Server) images() publishedImages { return publishedImages{s.db.Images(), s} }

func (p publishedImages) Create(ctx context.Context, img metadata.Image) (metadata.Image, error) {
	out, err := p.Images.Create(ctx, img)
	if err == nil {
		p.s.publish(ctx, events.TopicImageCreate, imageEvent(out))
	}
	return out, err
}

func (p publishedImages) Update(ctx context.Context, img metadata.Image, fieldpaths ...string) (metadata.Image, error) {
	out, err := p.Images.Update(ctx, img, fieldpaths...)
	if err == nil {
		p.s.publish(ctx, events.TopicImageUpdate, imageEvent(out))
	}
	return out, err
}

func (p publishedImages) Delete(ctx context.Context, name string) error {
	err := p.Images.Delete(ctx, name)
	if err == nil {
		p.s.publish(ctx, events.TopicImageDelete, events.Image{Name: name})
	}
	return err
}

// publishedSnapshotter publishes what a namespaced snapshotter view
// prepares, commits and removes: the API's calls, a pull's unpack and a
// container's removal alike (a collection removes below it, in the
// metadata, and tells of it in /gc/run).
type publishedSnapshotter struct {
	snapshot.Snapshotter
	name string
	s    *Server
}

func (p publishedSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	ms, err := p.Snapshotter.Prepare(ctx, key, parent, opts...)
	if err == nil {
		p.s.publish(ctx, events.TopicSnapshotPrepare, events.Snapshot{Snapshotter: p.name, Key: key, Parent: parent})
	}
	return ms, err
}

func (p publishedSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	err := p.Snapshotter.Commit(ctx, name, key, opts...)
	if err == nil {
		p.s.publish(ctx, events.TopicSnapshotCommit, events.Snapshot{Snapshotter: p.name, Key: key, Name: name})
	}
	return err
}

func (p publishedSnapshotter) Remove(ctx context.Context, key string) error {
	err := p.Snapshotter.Remove(ctx, key)
	if err == nil {
		p.s.publish(ctx, events.TopicSnapshotRemove, events.Snapshot{Snapshotter: p.name, Key: key})
	}
	return err
}

// Cleanup keeps the view's snapshot.Cleaner visible through the wrapper.
func (p publishedSnapshotter) Cleanup(ctx context.Context) error {
	c, ok := p.Snapshotter.(snapshot.Cleaner)
	if !ok {
		return errdefs.ErrNotImplemented
	}
	return c.Cleanup(ctx)
}

// publishedContent is the API's content store: it publishes
// /content/delete.
type publishedContent struct {
	content.Store
	s *Server
}

func (p publishedContent) Delete(ctx context.Context, dgst digest.Digest) error {
	err := p.Store.Delete(ctx, dgst)
	if err == nil {
		p.s.publish(ctx, events.TopicContentDelete, events.Content{Digest: dgst.String()})
	}
	return err
}

// BlobPath keeps the store's content.BlobPather visible through the
// wrapper.
func (p publishedContent) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	bp, ok := p.Store.(content.BlobPather)
	if !ok {
		return "", errdefs.ErrNotImplemented
	}
	return bp.BlobPath(ctx, dgst)
}

// publishedGC publishes /gc/run after each collection that changed
// something or failed to (dry runs change nothing and are not published).
type publishedGC struct {
	gc.Collector
	s *Server
}

func (p publishedGC) GarbageCollect(ctx context.Context, opts gc.Options) (gc.Report, error) {
	r, err := p.Collector.GarbageCollect(ctx, opts)
	if err != nil || opts.DryRun {
		return r, err
	}
	ev := events.GCRun{Removed: map[string]int{}, Errors: r.Errors, Duration: r.Duration}
	for _, o := range r.Removed {
		ev.Removed[string(o.Kind)]++
		if o.Kind == gc.KindContent {
			ev.BytesFreed += o.Size
		}
	}
	p.s.events.Publish("", events.TopicGCRun, ev)
	return r, nil
}

// pluginEvents is pluginhost's hook: it publishes the plugins' starts,
// exits and restarts.
func (s *Server) pluginEvents(ev pluginhost.Event) {
	topic := map[pluginhost.EventType]string{
		pluginhost.EventStarted:   events.TopicPluginStarted,
		pluginhost.EventExited:    events.TopicPluginExited,
		pluginhost.EventRestarted: events.TopicPluginRestarted,
	}[ev.Type]
	if topic == "" {
		return
	}
	s.events.Publish("", topic, events.Plugin{Kind: ev.Kind, Name: ev.Name, Pid: ev.Pid, Restarts: ev.Restarts, Error: ev.Error})
}

type eventsService struct {
	keelv1.UnimplementedEventsServer
	s *Server
}

func (s *Server) registerEvents(srv *grpc.Server) {
	keelv1.RegisterEventsServer(srv, eventsService{s: s})
}

// Subscribe streams the events the request's filters select, in every
// namespace, from its since when set.
func (es eventsService) Subscribe(req *keelv1.SubscribeRequest, stream grpc.ServerStreamingServer[keelv1.Envelope]) error {
	f, err := filters.Parse(req.Filters...)
	if err != nil {
		return err
	}
	ex := es.s.events
	pos := events.Position{Since: ex.Last(), Epoch: req.Epoch}
	if req.Since != nil {
		pos.Since = *req.Since
	}
	// Headers now, so the client knows it is subscribed before any event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for ev := range ex.SubscribeFrom(stream.Context(), pos, nil) {
		out := envelopeToProto(ev)
		if !ev.IsMarker() && !filters.Match(f, envelopeAdaptor{out}) {
			continue
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
	return nil
}

// envelopeToProto is the one conversion of an event to the API's form.
func envelopeToProto(ev events.Envelope) *keelv1.Envelope {
	out := &keelv1.Envelope{
		Sequence: ev.Sequence, Epoch: ev.Epoch, Timestamp: timestamppb.New(ev.Timestamp),
		Namespace: ev.Namespace, Topic: ev.Topic,
	}
	if ev.IsMarker() {
		out.Event = &keelv1.Envelope_Missed{Missed: &keelv1.Missed{Count: ev.Missed, Restarted: ev.Restarted}}
		return out
	}
	switch e := ev.Event.(type) {
	case events.Namespace:
		out.Event = &keelv1.Envelope_NamespaceEvent{NamespaceEvent: &keelv1.NamespaceEvent{Name: e.Name, Labels: e.Labels}}
	case events.Image:
		out.Event = &keelv1.Envelope_Image{Image: &keelv1.ImageEvent{Name: e.Name, Target: e.Target, Labels: e.Labels}}
	case events.Content:
		out.Event = &keelv1.Envelope_Content{Content: &keelv1.ContentEvent{Digest: e.Digest}}
	case events.Snapshot:
		out.Event = &keelv1.Envelope_Snapshot{Snapshot: &keelv1.SnapshotEvent{Snapshotter: e.Snapshotter, Key: e.Key, Parent: e.Parent, Name: e.Name}}
	case events.Container:
		out.Event = &keelv1.Envelope_Container{Container: &keelv1.ContainerEvent{
			Id: e.ID, Image: e.Image, Runtime: e.Runtime, Snapshotter: e.Snapshotter, SnapshotKey: e.SnapshotKey, Labels: e.Labels,
		}}
	case events.Task:
		out.Event = &keelv1.Envelope_Task{Task: taskEventToProto(ev, e)}
	case events.Plugin:
		out.Event = &keelv1.Envelope_Plugin{Plugin: &keelv1.PluginEvent{Kind: e.Kind, Name: e.Name, Pid: uint32(e.Pid), Restarts: uint32(e.Restarts), Error: e.Error}}
	case events.GCRun:
		removed := map[string]uint32{}
		for k, n := range e.Removed {
			removed[k] = uint32(n)
		}
		out.Event = &keelv1.Envelope_GcRun{GcRun: &keelv1.GCRunEvent{Removed: removed, BytesFreed: e.BytesFreed, Errors: e.Errors, DurationNs: int64(e.Duration)}}
	}
	return out
}

func taskEventToProto(ev events.Envelope, t events.Task) *keelv1.TaskEvent {
	out := &keelv1.TaskEvent{
		Namespace: ev.Namespace, Topic: ev.Topic, Id: t.ID, ExecId: t.ExecID, Pid: t.Pid,
		ExitStatus: t.ExitStatus, Runtime: t.Runtime, Timestamp: timestamppb.New(ev.Timestamp),
	}
	if !t.ExitedAt.IsZero() {
		out.ExitedAt = timestamppb.New(t.ExitedAt)
	}
	return out
}

// envelopeAdaptor exposes an envelope to containerd's filters as
// containerd's events filter does: topic, namespace, and the payload's
// fields under "event", named as the payload message's fields
// (event.id, event.labels.x).
type envelopeAdaptor struct{ e *keelv1.Envelope }

func (a envelopeAdaptor) Field(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	switch path[0] {
	case "topic":
		return a.e.Topic, len(path) == 1 && a.e.Topic != ""
	case "namespace":
		return a.e.Namespace, len(path) == 1 && a.e.Namespace != ""
	case "event":
		m := a.e.ProtoReflect()
		od := m.Descriptor().Oneofs().ByName("event")
		fd := m.WhichOneof(od)
		if fd == nil || fd.Message() == nil {
			return "", false
		}
		return messageField(m.Get(fd).Message(), path[1:])
	}
	return "", false
}

// messageField is the scalar at path in m, maps' keys as in labels.x.
func messageField(m protoreflect.Message, path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil {
		return "", false
	}
	v := m.Get(fd)
	switch {
	case fd.IsMap():
		if len(path) < 2 || fd.MapKey().Kind() != protoreflect.StringKind {
			return "", false
		}
		labels := map[string]string{}
		v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			labels[k.String()] = scalarString(v)
			return true
		})
		return filters.MapField(labels, path[1:])
	case fd.IsList():
		return "", false
	case fd.Kind() == protoreflect.MessageKind:
		if !m.Has(fd) {
			return "", false
		}
		return messageField(v.Message(), path[1:])
	case len(path) != 1:
		return "", false
	}
	// A field is present when set, as containerd's adaptors say.
	sv := scalarString(v)
	return sv, sv != ""
}

func scalarString(v protoreflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case protoreflect.EnumNumber:
		return strconv.Itoa(int(x))
	}
	return v.String()
}
