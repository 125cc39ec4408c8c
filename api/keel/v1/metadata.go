package keelv1

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// gRPC metadata keys of keeld's API: the call-scoped selectors, read into
// and written from a Scope.
const (
	// MetadataNamespace scopes every call to a namespace (DefaultNamespace
	// when absent).
	MetadataNamespace = "keel-namespace"
	// MetadataLease names the lease a call works under: what the call
	// creates (content, ingests, snapshots) is attached to it, so garbage
	// collection keeps it while the lease lives.
	MetadataLease = "keel-lease"
	// MetadataSnapshotter picks the snapshotter plugin of a call that
	// touches snapshots (keeld's default_snapshotter when absent).
	MetadataSnapshotter = "keel-snapshotter"
	// MetadataResolver picks the resolver plugin of a call that reaches a
	// registry (keeld's only resolver when absent).
	MetadataResolver = "keel-resolver"
)

// DefaultNamespace is used when a call names none.
const DefaultNamespace = "default"

// Scope is what a call is scoped to besides its request: its selectors, one
// metadata key each. An empty field is a selector the call does not name;
// it is not sent, and keeld uses its default.
type Scope struct {
	Namespace   string // MetadataNamespace
	Lease       string // MetadataLease
	Snapshotter string // MetadataSnapshotter
	Resolver    string // MetadataResolver
}

// selector is one field of a Scope and its metadata key.
type selector struct {
	key   string
	value *string
}

// selectors pairs each field of s with its metadata key: the one mapping
// between a Scope and the wire.
func (s *Scope) selectors() []selector {
	return []selector{
		{MetadataNamespace, &s.Namespace},
		{MetadataLease, &s.Lease},
		{MetadataSnapshotter, &s.Snapshotter},
		{MetadataResolver, &s.Resolver},
	}
}

// ScopeFromMetadata reads the selectors md names: the first value of each
// key, an empty one being none.
func ScopeFromMetadata(md metadata.MD) Scope {
	var s Scope
	for _, sel := range s.selectors() {
		if v := md.Get(sel.key); len(v) > 0 {
			*sel.value = v[0]
		}
	}
	return s
}

// SetMetadata writes the selectors s names into md, each key once,
// replacing the values it had; keys of selectors s does not name are left
// as they are.
func (s Scope) SetMetadata(md metadata.MD) {
	for _, sel := range s.selectors() {
		if *sel.value != "" {
			md.Set(sel.key, *sel.value)
		}
	}
}

// Or returns s with the selectors it does not name taken from def.
func (s Scope) Or(def Scope) Scope {
	d := def.selectors()
	for i, sel := range s.selectors() {
		if *sel.value == "" {
			*sel.value = *d[i].value
		}
	}
	return s
}

type scopeKey struct{}

// ScopeFromContext returns the Scope ctx carries: in the Go client, the
// selectors a call asks for; in keeld, those it is served under, defaults
// filled in.
func ScopeFromContext(ctx context.Context) Scope {
	s, _ := ctx.Value(scopeKey{}).(Scope)
	return s
}

// WithScope returns ctx carrying the Scope of ctx as set changes it.
func WithScope(ctx context.Context, set func(*Scope)) context.Context {
	s := ScopeFromContext(ctx)
	set(&s)
	return context.WithValue(ctx, scopeKey{}, s)
}
