package client

import (
	"context"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// Namespace is a tenant of keeld: every image, container, lease, snapshot
// and content reference belongs to one.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NamespaceService manages keeld's namespaces.
type NamespaceService struct {
	c keelv1.NamespacesClient
}

// Namespaces manages keeld's namespaces.
func (c *Client) Namespaces() *NamespaceService {
	return &NamespaceService{c: keelv1.NewNamespacesClient(c.conn)}
}

// Create makes a namespace. AlreadyExists when it exists; InvalidArgument
// for a bad name.
func (s *NamespaceService) Create(ctx context.Context, name string, labels map[string]string) (Namespace, error) {
	resp, err := s.c.Create(ctx, &keelv1.Namespace{Name: name, Labels: labels})
	if err != nil {
		return Namespace{}, err
	}
	return namespaceFromProto(resp), nil
}

// Get returns a namespace. NotFound when it does not exist.
func (s *NamespaceService) Get(ctx context.Context, name string) (Namespace, error) {
	resp, err := s.c.Get(ctx, &keelv1.GetNamespaceRequest{Name: name})
	if err != nil {
		return Namespace{}, err
	}
	return namespaceFromProto(resp), nil
}

// List returns every namespace.
func (s *NamespaceService) List(ctx context.Context) ([]Namespace, error) {
	resp, err := s.c.List(ctx, &keelv1.ListNamespacesRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]Namespace, len(resp.Namespaces))
	for i, ns := range resp.Namespaces {
		out[i] = namespaceFromProto(ns)
	}
	return out, nil
}

// Update replaces the labels of ns.Name that fieldpaths name ("labels" for
// all of them, "labels.<key>" for one; none means all). NotFound when the
// namespace does not exist.
func (s *NamespaceService) Update(ctx context.Context, ns Namespace, fieldpaths ...string) (Namespace, error) {
	resp, err := s.c.Update(ctx, &keelv1.UpdateNamespaceRequest{
		Namespace:  &keelv1.Namespace{Name: ns.Name, Labels: ns.Labels},
		FieldPaths: fieldpaths,
	})
	if err != nil {
		return Namespace{}, err
	}
	return namespaceFromProto(resp), nil
}

// Delete removes an empty namespace. NotFound when it does not exist;
// FailedPrecondition while it holds anything.
func (s *NamespaceService) Delete(ctx context.Context, name string) error {
	_, err := s.c.Delete(ctx, &keelv1.DeleteNamespaceRequest{Name: name})
	return err
}

func namespaceFromProto(p *keelv1.Namespace) Namespace {
	if p == nil {
		return Namespace{}
	}
	return Namespace{Name: p.Name, Labels: p.Labels}
}
