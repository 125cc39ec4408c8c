// Package namespaces carries the namespace and the snapshotter name of a call
// in its context. Clients send them in gRPC metadata under
// keelv1.MetadataNamespace ("keel-namespace") and keelv1.MetadataSnapshotter;
// keeld's interceptors read them into the context, and every store takes the
// namespace from there with NamespaceRequired.
package namespaces

import (
	"context"
	"fmt"
	"regexp"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// MaxLength is the longest namespace name, as in containerd.
const MaxLength = 76

// nameRe is containerd's rule: alphanumeric words joined by single '.', '_'
// or '-'.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// Validate reports whether name is a valid namespace name (InvalidArgument
// otherwise).
func Validate(name string) error {
	if name == "" {
		return fmt.Errorf("namespace name is empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(name) > MaxLength {
		return fmt.Errorf("namespace %q: longer than %d characters: %w", name, MaxLength, errdefs.ErrInvalidArgument)
	}
	if !nameRe.MatchString(name) {
		return fmt.Errorf("namespace %q: must be alphanumeric words joined by '.', '_' or '-': %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

type namespaceKey struct{}
type snapshotterKey struct{}

// WithNamespace returns ctx carrying namespace ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, namespaceKey{}, ns)
}

// Namespace returns the namespace ctx carries, if any.
func Namespace(ctx context.Context) (string, bool) {
	ns, ok := ctx.Value(namespaceKey{}).(string)
	return ns, ok && ns != ""
}

// NamespaceRequired returns the namespace ctx carries; InvalidArgument when
// there is none or it is not a valid name.
func NamespaceRequired(ctx context.Context) (string, error) {
	ns, ok := Namespace(ctx)
	if !ok {
		return "", fmt.Errorf("namespace is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := Validate(ns); err != nil {
		return "", err
	}
	return ns, nil
}

// WithSnapshotter returns ctx carrying the snapshotter name.
func WithSnapshotter(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, snapshotterKey{}, name)
}

// Snapshotter returns the snapshotter name ctx carries, if any.
func Snapshotter(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(snapshotterKey{}).(string)
	return name, ok && name != ""
}
