package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestCheckRecursiveReadOnly: what the CRI says a recursively read-only
// mount must be is refused before keeld is asked what the runtime can do
// (this server has no keeld); mounts without it ask nothing.
func TestCheckRecursiveReadOnly(t *testing.T) {
	s := &Server{}
	for _, tc := range []struct {
		name  string
		mount *runtimeapi.Mount
	}{
		{"read-write", &runtimeapi.Mount{ContainerPath: "/m", RecursiveReadOnly: true}},
		{"host to container", &runtimeapi.Mount{ContainerPath: "/m", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}},
		{"bidirectional", &runtimeapi.Mount{ContainerPath: "/m", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.checkRecursiveReadOnly(t.Context(), "", []*runtimeapi.Mount{tc.mount}); !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
	plain := []*runtimeapi.Mount{{ContainerPath: "/a", Readonly: true}, {ContainerPath: "/b", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
	if err := s.checkRecursiveReadOnly(t.Context(), "", plain); err != nil {
		t.Errorf("mounts without recursive read-only: %v", err)
	}
}
