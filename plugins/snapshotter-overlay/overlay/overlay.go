// Package overlay is keel's overlayfs snapshotter: each snapshot is a
// directory, and a chain of committed snapshots is stacked by one overlay
// mount. The metadata, lifecycle and error classes come from
// sdk/snapshot/backend; this package is the filesystem side.
//
// Layout under the plugin's root:
//
//	metadata.db            sdk/snapshot/storage metastore
//	snapshots/<id>/fs      the snapshot's own layer: the upper dir while
//	                       active, a lower dir once committed
//	snapshots/<id>/work    overlay's work dir (active snapshots)
//	trash/                 removed snapshots being deleted; Cleanup empties it
//
// Mounts: an active snapshot on a parent chain is an overlay with the
// chain's fs dirs as lowerdir (nearest parent first) and its own fs and
// work as upperdir and workdir; with no parent it is a bind mount of its fs.
// A view of one layer is a read-only bind mount of that layer; a view of a
// longer chain is an overlay with lower dirs only. Ids are the store's
// short decimal numbers. A chain deep enough that the lowerdir option would
// pass mount(2)'s one-page limit gets one lowerdir+= option per layer
// instead (Linux 6.8+), which sdk/mount sets one by one through fsconfig(2)
// (see sdk/mount.Overlay). With the volatile mount option configured,
// handing out an active snapshot's mounts again readies its work dir for
// another volatile mount (see Volatile mounts).
//
// Whiteouts are the kernel's: whoever writes through the mount (keeld's
// layer applier) deletes and makes opaque dirs through overlayfs, which
// records a 0/0 character device or the trusted.overlay.opaque xattr in
// the upper dir.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
	"github.com/keel-runtime/keel/sdk/snapshot/backend"
)

// Config is the plugin's config block.
type Config struct {
	// Root, when set, is where the snapshots and metadata live instead of
	// the directory keeld gives the plugin. Must be absolute.
	Root string `json:"root"`
	// SyncRemove deletes a removed snapshot's files before Remove returns;
	// by default they are moved to trash/ and deleted in the background.
	SyncRemove bool `json:"sync_remove"`
	// UpperdirLabel sets the label LabelUpperdir on every snapshot to its
	// fs dir, for tooling that reads layers directly.
	UpperdirLabel bool `json:"upperdir_label"`
	// MountOptions are added to every overlay mount, e.g. "volatile" (only
	// on mounts with an upper dir) or "index=off".
	MountOptions []string `json:"mount_options"`
}

// LabelUpperdir is the label UpperdirLabel sets.
const LabelUpperdir = "io.keel/snapshot/overlay.upperdir"

// layers is the filesystem side of the snapshotter.
type layers struct {
	root   string
	cfg    Config
	logger hclog.Logger

	// usage caches the usage of committed snapshots, by id.
	usage sync.Map

	// emptying serializes the trash worker with Cleanup; kick wakes the
	// worker, done ends it.
	emptying sync.Mutex
	kick     chan struct{}
	done     chan struct{}
	worker   sync.WaitGroup
}

// Interface guards.
var (
	_ backend.Backend    = (*layers)(nil)
	_ backend.Lister     = (*layers)(nil)
	_ backend.Labeler    = (*layers)(nil)
	_ backend.KindUsager = (*layers)(nil)
	_ snapshot.Cleaner   = (*layers)(nil)
)

// New opens the overlay snapshotter on env.Root (or the config's root). It
// refuses a root whose filesystem cannot host overlay upper dirs.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	var cfg Config
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	root := env.Root
	if cfg.Root != "" {
		if !filepath.IsAbs(cfg.Root) {
			return nil, sdk.ConfigKeyError("root", fmt.Errorf("%q is not absolute", cfg.Root))
		}
		root = cfg.Root
	}
	logger := env.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	for _, dir := range []string{"snapshots", "trash"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			return nil, err
		}
	}
	// A check a killed plugin was doing left its scratch dir, maybe mounted.
	if removed, err := mount.SweepOverlayChecks(filepath.Join(root, "snapshots")); err != nil {
		logger.Warn("removing what a killed overlay check left", "error", err)
	} else if len(removed) > 0 {
		logger.Info("removed what a killed overlay check left", "removed", len(removed))
	}
	if err := mount.CheckOverlay(filepath.Join(root, "snapshots")); err != nil {
		if !errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("root %s: %w", root, err)
		}
		logger.Warn("cannot check the root for overlay without the privilege to mount", "root", root, "error", err)
	}
	l := &layers{root: root, cfg: cfg, logger: logger, kick: make(chan struct{}, 1), done: make(chan struct{})}
	l.worker.Go(l.emptyTrashLoop)
	l.kick <- struct{}{} // what a crash left in the trash
	sn, err := backend.Open(ctx, filepath.Join(root, "metadata.db"), l)
	if err != nil {
		l.Close()
		return nil, err
	}
	return sn, nil
}

func (l *layers) dir(id string) string   { return filepath.Join(l.root, "snapshots", id) }
func (l *layers) fsDir(id string) string { return filepath.Join(l.root, "snapshots", id, "fs") }
func (l *layers) trash() string          { return filepath.Join(l.root, "trash") }

// Create makes the snapshot's fs dir (and work dir for an active one). An
// active snapshot's upper root takes its parent's root mode and owner,
// since overlay shows the upper root's.
func (l *layers) Create(ctx context.Context, id string, kind snapshot.Kind, parentIDs []string) error {
	if err := os.Mkdir(l.dir(id), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(l.fsDir(id), 0o755); err != nil {
		return err
	}
	if kind != snapshot.KindActive {
		return nil
	}
	if err := os.Mkdir(filepath.Join(l.dir(id), "work"), 0o700); err != nil {
		return err
	}
	if len(parentIDs) == 0 {
		return nil
	}
	return backend.CopyDirAttrs(l.fsDir(parentIDs[0]), l.fsDir(id))
}

// Mounts: see the package doc.
func (l *layers) Mounts(id string, kind snapshot.Kind, parentIDs []string) []mount.Mount {
	switch {
	case kind == snapshot.KindActive && len(parentIDs) == 0:
		return []mount.Mount{{Type: "bind", Source: l.fsDir(id), Options: []string{"rbind", "rw"}}}
	case kind == snapshot.KindView && len(parentIDs) == 0:
		return []mount.Mount{{Type: "bind", Source: l.fsDir(id), Options: []string{"rbind", "ro"}}}
	case kind == snapshot.KindView && len(parentIDs) == 1:
		return []mount.Mount{{Type: "bind", Source: l.fsDir(parentIDs[0]), Options: []string{"rbind", "ro"}}}
	}
	lowers := make([]string, len(parentIDs))
	for i, p := range parentIDs {
		lowers[i] = l.fsDir(p)
	}
	if kind == snapshot.KindView {
		// volatile needs an upper dir; the kernel refuses it without one.
		opts := slices.DeleteFunc(slices.Clone(l.cfg.MountOptions), func(o string) bool { return o == "volatile" })
		return []mount.Mount{mount.Overlay(lowers, "", "", opts...)}
	}
	work := filepath.Join(l.dir(id), "work")
	if slices.Contains(l.cfg.MountOptions, "volatile") {
		l.readyVolatile(id, work)
	}
	return []mount.Mount{mount.Overlay(lowers, l.fsDir(id), work, l.cfg.MountOptions...)}
}

// Volatile mounts.
//
// A volatile overlay mount marks its work dir (overlay's own "work" dir in
// ours, then incompat/volatile), and overlay refuses to mount that work
// dir again, with EINVAL, while the mark is there: the mount skipped every
// sync, so after a crash the upper dir may have lost writes. The kernel's
// documentation (filesystems/overlayfs, "Volatile mount") allows removing
// the mark where the system has not crashed since. So before handing out
// an active snapshot's mounts again, readyVolatile removes the mark when
//
//   - the plugin handed out the snapshot's volatile mounts in this boot
//     (the boot id it records in snapshots/<id>/volatile-boot, durably,
//     before the mounts leave it), so no crash came in between;
//   - no mount of the snapshot is live (in the plugin's mount namespace,
//     keeld's, where keeld and keel's runtime shims mount), so none is
//     writing unsynced data still; a second mount of a live one stays
//     refused;
//   - the upper dir's filesystem has been synced (syncfs), so what the
//     earlier mount wrote is on disk before the mark goes.
//
// A mark left from an earlier boot stays, and the plugin warns: the
// snapshot cannot be mounted again and should be removed.

// volatileBootFile records, in a snapshot's dir, the boot that last got
// its volatile mounts.
const volatileBootFile = "volatile-boot"

// bootIDPath is the kernel's id of the current boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// readyVolatile readies the work dir of active snapshot id for another
// volatile mount and records the boot handing it out; see Volatile mounts.
// It is the only I/O Mounts does (reads, but for the record once a boot
// and a mark to remove). Failures are logged; none removes the mark
// without the checks, so the worst is a mount overlay refuses.
func (l *layers) readyVolatile(id, work string) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		l.logger.Warn("volatile mount: reading the boot id", "error", err)
		return
	}
	boot := strings.TrimSpace(string(b))
	stamp := filepath.Join(l.dir(id), volatileBootFile)
	prev, err := os.ReadFile(stamp)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		l.logger.Warn("volatile mount: reading the boot record", "snapshot", id, "error", err)
		return
	}
	mark := filepath.Join(work, "work", "incompat", "volatile")
	if _, err := os.Lstat(mark); err == nil {
		if string(prev) != boot {
			l.logger.Warn("snapshot was mounted volatile before the system restarted: its upper dir may have lost writes, and overlay refuses to mount it again; remove it",
				"snapshot", id, "upper", l.fsDir(id))
			return
		}
		if live, err := workInUse(work); err != nil {
			l.logger.Warn("volatile mount: listing mounts", "snapshot", id, "error", err)
			return
		} else if live {
			l.logger.Info("volatile mount: the snapshot is mounted already, and overlay refuses a second mount while it is", "snapshot", id)
			return
		}
		if err := backend.SyncFS(l.fsDir(id)); err != nil {
			l.logger.Warn("volatile mount: syncing the upper dir", "snapshot", id, "error", err)
			return
		}
		if err := os.RemoveAll(mark); err != nil {
			l.logger.Warn("volatile mount: removing overlay's mark", "snapshot", id, "error", err)
			return
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		l.logger.Warn("volatile mount: checking overlay's mark", "snapshot", id, "error", err)
		return
	}
	if string(prev) != boot {
		if err := writeDurably(stamp, boot); err != nil {
			l.logger.Warn("volatile mount: recording the boot", "snapshot", id, "error", err)
		}
	}
}

// workInUse reports whether an overlay mount with work dir work is live
// in this mount namespace.
func workInUse(work string) (bool, error) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "overlay" || !slices.Contains(strings.Split(m.VFSOptions, ","), "workdir="+work), false
	})
	return len(ms) > 0, err
}

// writeDurably replaces file with data, on disk before it returns.
func writeDurably(file, data string) error {
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(file))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Commit flushes the layer to disk: it becomes a lower dir for others.
func (l *layers) Commit(ctx context.Context, id string) error {
	return backend.SyncFS(l.fsDir(id))
}

// Remove deletes the snapshot's dirs, in the background unless
// sync_remove is set: a rename into the trash is all Remove waits for.
func (l *layers) Remove(ctx context.Context, id string) error {
	l.usage.Delete(id)
	if l.cfg.SyncRemove {
		return os.RemoveAll(l.dir(id))
	}
	err := os.Rename(l.dir(id), filepath.Join(l.trash(), id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	select {
	case l.kick <- struct{}{}:
	default: // a pass is due already
	}
	return nil
}

// emptyTrashLoop deletes what lands in the trash until Close.
func (l *layers) emptyTrashLoop() {
	for {
		select {
		case <-l.done:
			return
		case <-l.kick:
			if err := l.emptyTrash(); err != nil {
				l.logger.Warn("emptying the trash; Cleanup retries", "error", err)
			}
		}
	}
}

func (l *layers) emptyTrash() error {
	l.emptying.Lock()
	defer l.emptying.Unlock()
	names, err := backend.ListDir(l.trash())
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(l.trash(), n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Usage of the snapshot's own layer (see UsageOf).
func (l *layers) Usage(ctx context.Context, id string) (snapshot.Usage, error) {
	return backend.DirUsage(ctx, l.fsDir(id))
}

// UsageOf is the size and inode count of the snapshot's fs dir, cached for
// committed snapshots, which never change.
func (l *layers) UsageOf(ctx context.Context, id string, kind snapshot.Kind) (snapshot.Usage, error) {
	if kind != snapshot.KindCommitted {
		return l.Usage(ctx, id)
	}
	if u, ok := l.usage.Load(id); ok {
		return u.(snapshot.Usage), nil
	}
	u, err := l.Usage(ctx, id)
	if err != nil {
		return u, err
	}
	l.usage.Store(id, u)
	return u, nil
}

// Labels are the upperdir label, when configured.
func (l *layers) Labels(id string, kind snapshot.Kind) map[string]string {
	if !l.cfg.UpperdirLabel {
		return nil
	}
	return map[string]string{LabelUpperdir: l.fsDir(id)}
}

// List makes the snapshotter a snapshot.Cleaner: Cleanup removes the dirs
// of ids no snapshot owns.
func (l *layers) List(ctx context.Context) ([]string, error) {
	return backend.ListDir(filepath.Join(l.root, "snapshots"))
}

// Cleanup empties the trash now.
func (l *layers) Cleanup(ctx context.Context) error { return l.emptyTrash() }

// Close stops the trash worker; what it left is deleted on the next start.
func (l *layers) Close() error {
	close(l.done)
	l.worker.Wait()
	return nil
}
