package client

import (
	"context"
	"time"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// GCObject is one decision of a garbage collection.
type GCObject struct {
	// Kind is "content", "snapshot", "lease" or "ingest".
	Kind string `json:"kind"`
	// Namespace is empty for an orphan (a plugin's object no metadata
	// refers to).
	Namespace string `json:"namespace,omitempty"`
	// Name is a digest, "<snapshotter>/<key>" (an orphan's: the backend
	// key), a lease id or an ingest ref (an orphan's: the backend ref).
	Name string `json:"name"`
	// Root is what keeps a kept object, e.g. "image NAME", "lease ID".
	Root string `json:"root,omitempty"`
	// Reason explains a removal.
	Reason string `json:"reason,omitempty"`
	// Size is a blob's size, or the bytes an ingest holds.
	Size int64 `json:"size,omitempty"`
}

// GCReport is what a collection removed (would remove, on a dry run) and,
// on a dry run, what it keeps and why.
type GCReport struct {
	Removed  []GCObject    `json:"removed"`
	Kept     []GCObject    `json:"kept,omitempty"`
	Errors   []string      `json:"errors,omitempty"`
	Duration time.Duration `json:"duration"`
}

// GCOpt tunes GarbageCollect.
type GCOpt func(*keelv1.CollectRequest)

// WithDryRun changes nothing and explains every decision.
func WithDryRun() GCOpt { return func(r *keelv1.CollectRequest) { r.DryRun = true } }

// WithIngests also removes every partial ingest no writer or live lease
// holds, however recent.
func WithIngests() GCOpt { return func(r *keelv1.CollectRequest) { r.Ingests = true } }

// GarbageCollect runs keeld's garbage collection over every namespace now.
func (c *Client) GarbageCollect(ctx context.Context, opts ...GCOpt) (GCReport, error) {
	req := &keelv1.CollectRequest{}
	for _, opt := range opts {
		opt(req)
	}
	resp, err := keelv1.NewGCClient(c.conn).Collect(ctx, req)
	if err != nil {
		return GCReport{}, err
	}
	rep := GCReport{Removed: []GCObject{}, Errors: resp.Errors, Duration: time.Duration(resp.DurationNs)}
	conv := func(o *keelv1.GCObject) GCObject {
		return GCObject{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Root: o.Root, Reason: o.Reason, Size: o.Size}
	}
	for _, o := range resp.Removed {
		rep.Removed = append(rep.Removed, conv(o))
	}
	for _, o := range resp.Kept {
		rep.Kept = append(rep.Kept, conv(o))
	}
	return rep, nil
}
