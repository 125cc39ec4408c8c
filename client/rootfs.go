package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/keel-runtime/keel/sdk/mount"
)

// snapshotRootFS is an oci.RootFS of a container's snapshot: mounted
// read-only on a temporary directory the first time a spec option reads
// it, as containerd's WithUser does, and unmounted by close.
type snapshotRootFS struct {
	c                *Client
	snapshotter, key string
	dir              string
	root             *os.Root
}

func (r *snapshotRootFS) open(ctx context.Context, fn func(*os.Root) error) error {
	if r.root == nil {
		ms, err := r.c.SnapshotService(r.snapshotter).Mounts(ctx, r.key)
		if err != nil {
			return fmt.Errorf("rootfs snapshot %q: %w", r.key, err)
		}
		dir, err := os.MkdirTemp("", "keel-rootfs-")
		if err != nil {
			return err
		}
		if err := mount.All(readonlyMounts(ms), dir); err != nil {
			os.Remove(dir)
			return fmt.Errorf("rootfs snapshot %q: %w", r.key, err)
		}
		r.dir = dir
		if r.root, err = os.OpenRoot(dir); err != nil {
			return err
		}
	}
	return fn(r.root)
}

func (r *snapshotRootFS) close() error {
	if r.dir == "" {
		return nil
	}
	var err error
	if r.root != nil {
		err = r.root.Close()
	}
	err = errors.Join(err, mount.Unmount(r.dir), os.Remove(r.dir))
	r.dir, r.root = "", nil
	return err
}

// readonlyMounts is ms mounted read-only. An overlay with an upper dir
// becomes one of lower dirs only, the upper on top, so that mounting it
// does not touch (or need) the work dir of the snapshot's own mount.
func readonlyMounts(ms []mount.Mount) []mount.Mount {
	out := make([]mount.Mount, len(ms))
	for i, m := range ms {
		var opts []string
		upper := ""
		for _, o := range m.Options {
			switch {
			case o == "rw":
			case m.Type == "overlay" && strings.HasPrefix(o, "upperdir="):
				upper = strings.TrimPrefix(o, "upperdir=")
			case m.Type == "overlay" && strings.HasPrefix(o, "workdir="):
			default:
				opts = append(opts, o)
			}
		}
		if upper != "" {
			for j, o := range opts {
				if strings.HasPrefix(o, "lowerdir=") {
					opts[j] = "lowerdir=" + upper + ":" + strings.TrimPrefix(o, "lowerdir=")
					break
				}
				if strings.HasPrefix(o, "lowerdir+=") {
					opts = slices.Insert(opts, j, "lowerdir+="+upper)
					break
				}
			}
		}
		out[i] = mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: append(opts, "ro")}
	}
	return out
}
