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

// A container on the host's network (no network namespace of its own)
// gets what containerd and nerdctl give it: the host's resolv.conf and
// hosts, and its hostname in /etc/hostname. They are copies, made at each
// task create under keeld's state dir (containers/<namespace>/<id>/) and
// bind-mounted, so the container may change its own and never the host's;
// the container's delete removes them. A mount the spec has at one of
// these paths already wins.

// hostNetFiles are the files copied from the host, by their path in the
// container.
var hostNetFiles = []string{"/etc/resolv.conf", "/etc/hosts"}

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

// addHostNetFiles writes container id's copies and adds their mounts to
// spec, when it uses the host's network.
func (s *Server) addHostNetFiles(ctx context.Context, id string, spec *specs.Spec) error {
	if !usesHostNetwork(spec) {
		return nil
	}
	dir, err := s.containerStateDir(ctx, id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	files := map[string][]byte{}
	for _, dst := range hostNetFiles {
		data, err := os.ReadFile(dst)
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("container %q: host network: %w", id, err)
		}
		files[dst] = data
	}
	if spec.Hostname != "" {
		files["/etc/hostname"] = []byte(spec.Hostname + "\n")
	}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		if slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return filepath.Clean(m.Destination) == dst }) {
			continue
		}
		src := filepath.Join(dir, filepath.Base(dst))
		if err := os.WriteFile(src, files[dst], 0o644); err != nil {
			return fmt.Errorf("container %q: host network: %w", id, err)
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
