package client

import (
	"context"
	"time"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// LabelGCExpire is the lease label keeld reads as its expiry (RFC 3339);
// containerd's counterpart is containerd.io/gc.expire.
const LabelGCExpire = "keel.io/gc.expire"

// Lease holds resources against garbage collection until it expires or is
// deleted.
type Lease struct {
	ID        string
	Labels    map[string]string
	CreatedAt time.Time
}

// LeaseResource is a resource attached to a lease: Type "content" (ID a
// digest), "ingests" (ID an ingest ref) or "snapshots/<snapshotter>" (ID a
// snapshot key).
type LeaseResource struct {
	ID   string
	Type string
}

// LeaseOpt configures a new lease.
type LeaseOpt func(*keelv1.CreateLeaseRequest)

// WithLeaseID names the lease (keeld makes one up otherwise).
func WithLeaseID(id string) LeaseOpt {
	return func(r *keelv1.CreateLeaseRequest) { r.Id = id }
}

// WithLeaseLabels adds labels to the lease.
func WithLeaseLabels(labels map[string]string) LeaseOpt {
	return func(r *keelv1.CreateLeaseRequest) {
		if r.Labels == nil {
			r.Labels = map[string]string{}
		}
		for k, v := range labels {
			r.Labels[k] = v
		}
	}
}

// WithLeaseExpiration makes the lease expire d from now: garbage
// collection then deletes it and frees what only it held.
func WithLeaseExpiration(d time.Duration) LeaseOpt {
	return WithLeaseLabels(map[string]string{LabelGCExpire: time.Now().Add(d).UTC().Format(time.RFC3339Nano)})
}

// WithLease scopes the calls made with the returned context to lease id:
// content committed, ingests opened and snapshots created by them are
// attached to it.
func WithLease(ctx context.Context, id string) context.Context {
	return keelv1.WithScope(ctx, func(s *keelv1.Scope) { s.Lease = id })
}

// CreateLease makes a lease in the namespace. AlreadyExists when the id is
// taken.
func (c *Client) CreateLease(ctx context.Context, opts ...LeaseOpt) (Lease, error) {
	req := &keelv1.CreateLeaseRequest{}
	for _, opt := range opts {
		opt(req)
	}
	resp, err := keelv1.NewLeasesClient(c.conn).Create(ctx, req)
	if err != nil {
		return Lease{}, err
	}
	return leaseFromProto(resp), nil
}

// ListLeases returns the leases matching any of filters (id,
// labels.<key>), by id.
func (c *Client) ListLeases(ctx context.Context, filters ...string) ([]Lease, error) {
	resp, err := keelv1.NewLeasesClient(c.conn).List(ctx, &keelv1.ListLeasesRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	out := make([]Lease, len(resp.Leases))
	for i, l := range resp.Leases {
		out[i] = leaseFromProto(l)
	}
	return out, nil
}

// DeleteLease removes a lease; keeld then collects what only it held
// (before returning, WithSyncDelete). NotFound when absent.
func (c *Client) DeleteLease(ctx context.Context, id string, opts ...DeleteOpt) error {
	o := applyDelete(opts)
	_, err := keelv1.NewLeasesClient(c.conn).Delete(ctx, &keelv1.DeleteLeaseRequest{Id: id, Sync: o.sync})
	return err
}

// AddLeaseResource attaches r to lease id. NotFound when the lease does
// not exist.
func (c *Client) AddLeaseResource(ctx context.Context, id string, r LeaseResource) error {
	_, err := keelv1.NewLeasesClient(c.conn).AddResource(ctx, &keelv1.AddLeaseResourceRequest{Id: id, Resource: &keelv1.LeaseResource{Id: r.ID, Type: r.Type}})
	return err
}

// DeleteLeaseResource detaches r from lease id.
func (c *Client) DeleteLeaseResource(ctx context.Context, id string, r LeaseResource) error {
	_, err := keelv1.NewLeasesClient(c.conn).DeleteResource(ctx, &keelv1.DeleteLeaseResourceRequest{Id: id, Resource: &keelv1.LeaseResource{Id: r.ID, Type: r.Type}})
	return err
}

// ListLeaseResources returns what lease id holds.
func (c *Client) ListLeaseResources(ctx context.Context, id string) ([]LeaseResource, error) {
	resp, err := keelv1.NewLeasesClient(c.conn).ListResources(ctx, &keelv1.ListLeaseResourcesRequest{Id: id})
	if err != nil {
		return nil, err
	}
	out := make([]LeaseResource, len(resp.Resources))
	for i, r := range resp.Resources {
		out[i] = LeaseResource{ID: r.Id, Type: r.Type}
	}
	return out, nil
}

func leaseFromProto(p *keelv1.Lease) Lease {
	l := Lease{ID: p.Id, Labels: p.Labels}
	if p.CreatedAt != nil {
		l.CreatedAt = p.CreatedAt.AsTime()
	}
	return l
}
