package cri

import (
	"context"
	"fmt"
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// A CRI runtime handler is a keel runtime plugin, by name: a pod's
// runtime_handler picks the plugin its containers run on. The empty
// handler is keeld's default runtime, the only one configured (with
// several, a pod must name one).

// runtimeHandlers are keeld's runtime plugins as CRI runtime handlers, with
// what each can do (from the capabilities it announced), and the default
// one ("") when there is one runtime.
func (s *Server) runtimeHandlers(ctx context.Context) ([]*runtimeapi.RuntimeHandler, error) {
	plugins, err := s.c.Plugins(ctx)
	if err != nil {
		return nil, err
	}
	var out []*runtimeapi.RuntimeHandler
	for _, p := range plugins {
		if p.Kind == sdk.KindRuntime {
			out = append(out, &runtimeapi.RuntimeHandler{Name: p.Name, Features: handlerFeatures(p)})
		}
	}
	if len(out) == 1 {
		out = append([]*runtimeapi.RuntimeHandler{{Features: out[0].Features}}, out...)
	}
	return out, nil
}

func handlerFeatures(p client.Plugin) *runtimeapi.RuntimeHandlerFeatures {
	return &runtimeapi.RuntimeHandlerFeatures{
		RecursiveReadOnlyMounts: slices.Contains(p.Capabilities, keelruntime.CapabilityRecursiveReadOnly),
	}
}

// handlerFeatures are the features of the pod's handler; NotFound when
// keeld has no such runtime.
func (s *Server) handlerFeatures(ctx context.Context, handler string) (*runtimeapi.RuntimeHandlerFeatures, error) {
	hs, err := s.runtimeHandlers(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(hs, func(h *runtimeapi.RuntimeHandler) bool { return h.Name == handler })
	if i < 0 {
		return nil, fmt.Errorf("runtime handler %q: keeld has no such runtime (or several, and the pod names none): %w", handler, errdefs.ErrNotFound)
	}
	return hs[i].Features, nil
}

// checkRecursiveReadOnly refuses the recursively read-only mounts of
// mounts the handler cannot make, and those the CRI says are wrong: one
// not read-only, or with a propagation other than private (a submount
// arriving later could not be made read-only).
func (s *Server) checkRecursiveReadOnly(ctx context.Context, handler string, mounts []*runtimeapi.Mount) error {
	var features *runtimeapi.RuntimeHandlerFeatures
	for _, m := range mounts {
		if !m.GetRecursiveReadOnly() {
			continue
		}
		switch {
		case !m.GetReadonly():
			return fmt.Errorf("mount %s: recursive read-only needs read-only: %w", m.GetContainerPath(), errdefs.ErrInvalidArgument)
		case m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			return fmt.Errorf("mount %s: recursive read-only needs private propagation, not %v: %w", m.GetContainerPath(), m.GetPropagation(), errdefs.ErrInvalidArgument)
		}
		if features == nil {
			var err error
			if features, err = s.handlerFeatures(ctx, handler); err != nil {
				return err
			}
		}
		if !features.GetRecursiveReadOnlyMounts() {
			return fmt.Errorf("mount %s: runtime handler %q cannot make recursive read-only mounts (its runtime lacks the %s capability): %w",
				m.GetContainerPath(), handler, keelruntime.CapabilityRecursiveReadOnly, errdefs.ErrNotImplemented)
		}
	}
	return nil
}
