package server

import (
	"context"
	"runtime"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/version"
)

type versionService struct {
	keelv1.UnimplementedVersionServer
}

func (versionService) Version(context.Context, *keelv1.VersionRequest) (*keelv1.VersionResponse, error) {
	return &keelv1.VersionResponse{
		Version:   version.Version,
		Revision:  version.Revision(),
		GoVersion: runtime.Version(),
	}, nil
}

type pluginsService struct {
	keelv1.UnimplementedPluginsServer
	host *pluginhost.Host
}

func (p pluginsService) List(context.Context, *keelv1.ListPluginsRequest) (*keelv1.ListPluginsResponse, error) {
	var resp keelv1.ListPluginsResponse
	for _, st := range p.host.Plugins() {
		resp.Plugins = append(resp.Plugins, &keelv1.Plugin{
			Kind:         st.Kind,
			Name:         st.Name,
			Path:         st.Path,
			Version:      st.Version,
			Pid:          int32(st.Pid),
			State:        st.State,
			Restarts:     int32(st.Restarts),
			Capabilities: st.Capabilities,
			LastError:    st.LastError,
		})
	}
	return &resp, nil
}

type namespacesService struct {
	keelv1.UnimplementedNamespacesServer
	store  *metadata.Namespaces
	events events.Publisher
}

func namespaceToProto(ns metadata.Namespace) *keelv1.Namespace {
	return &keelv1.Namespace{Name: ns.Name, Labels: ns.Labels}
}

func (n namespacesService) Create(ctx context.Context, req *keelv1.Namespace) (*keelv1.Namespace, error) {
	ns, err := n.store.Create(ctx, metadata.Namespace{Name: req.Name, Labels: req.Labels})
	if err != nil {
		return nil, err
	}
	n.events.Publish(ns.Name, events.TopicNamespaceCreate, events.Namespace{Name: ns.Name, Labels: ns.Labels})
	return namespaceToProto(ns), nil
}

func (n namespacesService) Get(ctx context.Context, req *keelv1.GetNamespaceRequest) (*keelv1.Namespace, error) {
	ns, err := n.store.Get(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return namespaceToProto(ns), nil
}

func (n namespacesService) List(ctx context.Context, _ *keelv1.ListNamespacesRequest) (*keelv1.ListNamespacesResponse, error) {
	list, err := n.store.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListNamespacesResponse{}
	for _, ns := range list {
		resp.Namespaces = append(resp.Namespaces, namespaceToProto(ns))
	}
	return resp, nil
}

func (n namespacesService) Update(ctx context.Context, req *keelv1.UpdateNamespaceRequest) (*keelv1.Namespace, error) {
	if req.Namespace == nil {
		return nil, errdefs.ErrInvalidArgument
	}
	ns, err := n.store.Update(ctx, metadata.Namespace{Name: req.Namespace.Name, Labels: req.Namespace.Labels}, req.FieldPaths...)
	if err != nil {
		return nil, err
	}
	n.events.Publish(ns.Name, events.TopicNamespaceUpdate, events.Namespace{Name: ns.Name, Labels: ns.Labels})
	return namespaceToProto(ns), nil
}

func (n namespacesService) Delete(ctx context.Context, req *keelv1.DeleteNamespaceRequest) (*keelv1.DeleteNamespaceResponse, error) {
	if err := n.store.Delete(ctx, req.Name); err != nil {
		return nil, err
	}
	n.events.Publish(req.Name, events.TopicNamespaceDelete, events.Namespace{Name: req.Name})
	return &keelv1.DeleteNamespaceResponse{}, nil
}
