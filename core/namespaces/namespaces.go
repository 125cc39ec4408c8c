// Package namespaces holds the rule for namespace names, and
// NamespaceRequired: how every store takes the namespace of a call from
// its context (core/scope), checked against that rule.
package namespaces

import (
	"context"
	"fmt"
	"regexp"

	"github.com/keel-runtime/keel/core/scope"
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

// NamespaceRequired returns the namespace ctx carries; InvalidArgument when
// there is none or it is not a valid name.
func NamespaceRequired(ctx context.Context) (string, error) {
	ns, ok := scope.Namespace(ctx)
	if !ok {
		return "", fmt.Errorf("namespace is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := Validate(ns); err != nil {
		return "", err
	}
	return ns, nil
}
