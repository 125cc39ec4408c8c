package oci

import (
	"context"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// WithNamespacePath joins the namespace of type ns at path (such as
// /proc/<pid>/ns/ipc of another container's task) instead of making a
// new one: how a pod's containers share its sandbox's namespaces. Joining
// a UTS namespace keeps its name (the spec's hostname is cleared: set, it
// would rename the other's).
func WithNamespacePath(ns specs.LinuxNamespaceType, path string) SpecOpt {
	return func(_ context.Context, s *Spec) error {
		if path == "" {
			return fmt.Errorf("namespace %s: empty path: %w", ns, errdefs.ErrInvalidArgument)
		}
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == ns })
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: ns, Path: path})
		if ns == specs.UTSNamespace {
			s.Hostname = ""
		}
		return nil
	}
}
