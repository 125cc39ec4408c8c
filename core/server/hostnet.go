package server

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/core/namespaces"
)

// Every container gets an /etc/resolv.conf, /etc/hosts and /etc/hostname
// of its own (network.go says what they hold for each network mode), as
// containerd with nerdctl and Docker give it: they are written at each
// task create under keeld's state dir (containers/<namespace>/<id>/) and
// bind-mounted, so the container may change its own and never the host's;
// the container's delete removes them. A mount the spec has at one of
// these paths already wins.

// containerStateDir is where keeld keeps files of container id of ctx's
// namespace.
func (s *Server) containerStateDir(ctx context.Context, id string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.cfg.State, "containers", ns, id), nil
}

// usesHostNetwork tells whether spec runs in the host's network namespace.
func usesHostNetwork(spec *specs.Spec) bool {
	if spec.Linux == nil {
		return false
	}
	return !slices.ContainsFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool {
		return n.Type == specs.NetworkNamespace
	})
}

// mountEtcFiles writes container id's files (by their path in the
// container) and adds their bind mounts to spec.
func (s *Server) mountEtcFiles(ctx context.Context, id string, spec *specs.Spec, files map[string][]byte) error {
	dir, err := s.containerStateDir(ctx, id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		if slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return filepath.Clean(m.Destination) == dst }) {
			continue
		}
		src := filepath.Join(dir, filepath.Base(dst))
		if err := os.WriteFile(src, files[dst], 0o644); err != nil {
			return fmt.Errorf("container %q: %s: %w", id, dst, err)
		}
		opts := []string{"rbind", "rprivate", "nosuid", "nodev", "noexec"}
		if spec.Root != nil && spec.Root.Readonly {
			opts = append(opts, "ro")
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}
	return nil
}

// removeContainerState removes what keeld kept for container id.
func (s *Server) removeContainerState(ctx context.Context, id string) error {
	dir, err := s.containerStateDir(ctx, id)
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
