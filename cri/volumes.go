package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/containerd/continuity/fs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client/oci"
)

// Image volumes: each path the image's config names a volume of (a
// Dockerfile's VOLUME) that no CRI mount covers gets a directory of its
// own, as containerd's CRI gives it: filled with the image's content at
// that path, bind-mounted read-write in its place, and removed with the
// container. The directories are under keeld's root:
// <root>/cri/volumes/<namespace>/<container id>/<n>.

// volumesDir is the directory of the image volumes of the namespace's
// containers, under keeld's root.
func (s *Server) volumesDir(ctx context.Context) (string, error) {
	info, err := s.c.Info(ctx)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(info.Root) {
		return "", fmt.Errorf("keeld's root %q is not an absolute path", info.Root)
	}
	return filepath.Join(info.Root, "cri", "volumes", s.c.Namespace()), nil
}

// imageVolumes are the destinations of the image's volumes that none of
// the CRI mounts is at, sorted (parents first).
func imageVolumes(volumes map[string]struct{}, mounts []*runtimeapi.Mount) []string {
	var out []string
	for dst := range volumes {
		dst = filepath.Clean(dst)
		if !filepath.IsAbs(dst) || slices.ContainsFunc(mounts, func(m *runtimeapi.Mount) bool {
			return filepath.Clean(m.GetContainerPath()) == dst
		}) {
			continue
		}
		out = append(out, dst)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// withImageVolumes makes a directory under dir for each of dsts, copies
// the image's content at that path into it (a path the image lacks gives
// an empty one), and binds it there.
func withImageVolumes(dir string, dsts []string) oci.SpecOpt {
	return func(ctx context.Context, s *oci.Spec) error {
		if len(dsts) == 0 {
			return nil
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("image volumes: %w", err)
		}
		var mounts []specs.Mount
		err := oci.ReadRootFS(ctx, s, func(root *os.Root) error {
			for i, dst := range dsts {
				host := filepath.Join(dir, strconv.Itoa(i))
				if err := os.Mkdir(host, 0o755); err != nil {
					return err
				}
				// Resolved inside the rootfs: a symlink in the image
				// never leads out of it.
				src, err := fs.RootPath(root.Name(), dst)
				if err != nil {
					return err
				}
				if fi, err := os.Stat(src); err == nil && fi.IsDir() {
					if err := fs.CopyDir(host, src); err != nil {
						return fmt.Errorf("volume %s: copy the image's content: %w", dst, err)
					}
				} else if err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("volume %s: %w", dst, err)
				}
				mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: host, Options: []string{"rbind", "rprivate", "rw"}})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("image volumes: %w", err)
		}
		s.Mounts = append(s.Mounts, mounts...)
		return nil
	}
}

// removeImageVolumes removes the image volumes of container id, if any.
func (r *runtimeService) removeImageVolumes(ctx context.Context, id string) error {
	dir, err := r.s.volumesDir(ctx)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(dir, id)); err != nil {
		return fmt.Errorf("container %s: remove its image volumes: %w", id, err)
	}
	return nil
}

// SweepImageVolumes removes the image volumes of containers that are gone
// (removed while keel-cri was down, or by another client of keeld) and
// returns their ids. Called before the server serves: no container is
// being made meanwhile.
func (s *Server) SweepImageVolumes(ctx context.Context) ([]string, error) {
	dir, err := s.volumesDir(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	all, err := s.c.Containers(ctx)
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, ct := range all {
		live[ct.ID()] = true
	}
	var removed []string
	for _, e := range entries {
		if live[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return removed, err
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}
