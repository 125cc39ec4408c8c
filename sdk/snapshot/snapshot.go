// Package snapshot is the snapshotter plugin contract, in containerd's model.
//
// A snapshot is a filesystem tree named by a key. Prepare makes an active
// (read-write) snapshot on top of a committed parent (or empty); Commit turns
// an active snapshot into a committed one under a new name, and the active
// key is gone; View makes a read-only snapshot of a parent that can never be
// committed. Committed snapshots are parents; a parent with children cannot
// be removed.
//
//	mounts, _ := s.Prepare(ctx, "layer-1-active", "")   // empty, read-write
//	// mount, write files, unmount
//	s.Commit(ctx, "layer-1", "layer-1-active")         // now read-only
//	mounts, _ = s.Prepare(ctx, "layer-2-active", "layer-1")
//
// A snapshotter returns mounts and never mounts them itself.
//
// Errors: a key in use is AlreadyExists; a missing key or parent NotFound;
// removing a parent with children, committing a view or a committed
// snapshot, or preparing on a parent that is not committed FailedPrecondition.
package snapshot

import (
	"context"
	"time"

	"github.com/keel-runtime/keel/sdk/filters"
	"github.com/keel-runtime/keel/sdk/mount"
)

// Kind is the state of a snapshot.
type Kind int

const (
	KindUnknown Kind = iota
	KindView
	KindActive
	KindCommitted
)

func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// ParseKind reads the String form of a kind.
func ParseKind(s string) Kind {
	for _, k := range []Kind{KindView, KindActive, KindCommitted} {
		if k.String() == s {
			return k
		}
	}
	return KindUnknown
}

// Info describes a snapshot.
type Info struct {
	Kind    Kind
	Name    string // key of an active snapshot or view, name of a committed one
	Parent  string // name of the parent, empty for none
	Labels  map[string]string
	Created time.Time
	Updated time.Time
}

// Usage is the disk use of a snapshot's own layer, not its parents'.
type Usage struct {
	Inodes int64
	Size   int64
}

// WalkFunc is called for each snapshot Walk visits.
type WalkFunc func(context.Context, Info) error

// Opt changes the Info of a snapshot being made.
type Opt func(*Info) error

// WithLabels sets labels on a snapshot being made.
func WithLabels(labels map[string]string) Opt {
	return func(info *Info) error {
		if info.Labels == nil {
			info.Labels = map[string]string{}
		}
		for k, v := range labels {
			info.Labels[k] = v
		}
		return nil
	}
}

// ApplyOpts builds the Info that opts describe.
func ApplyOpts(opts ...Opt) (Info, error) {
	var info Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// Snapshotter is the snapshotter plugin kind.
type Snapshotter interface {
	// Stat returns the info of the snapshot named key.
	Stat(ctx context.Context, key string) (Info, error)
	// Update changes the labels of a snapshot. fieldpaths are "labels" (all
	// of them) or "labels.<key>"; none means all labels.
	Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error)
	// Usage of the snapshot's own layer.
	Usage(ctx context.Context, key string) (Usage, error)
	// Mounts of an active snapshot or view.
	Mounts(ctx context.Context, key string) ([]mount.Mount, error)
	// Prepare makes an active snapshot on top of parent (empty for none).
	Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error)
	// View makes a read-only snapshot of parent.
	View(ctx context.Context, key, parent string, opts ...Opt) ([]mount.Mount, error)
	// Commit turns the active snapshot key into the committed snapshot name.
	Commit(ctx context.Context, name, key string, opts ...Opt) error
	// Remove deletes a snapshot with no children.
	Remove(ctx context.Context, key string) error
	// Walk calls fn for each snapshot that matches any of the filters (all
	// of them with none). Filters use containerd's syntax: kind==committed,
	// parent==x, name~=re, labels."k"==v, joined by commas for "and".
	Walk(ctx context.Context, fn WalkFunc, filters ...string) error
	// Close releases the snapshotter.
	Close() error
}

// Cleaner is a snapshotter that can remove what it holds for no snapshot
// (capability "cleanup").
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// CapabilityCleanup is announced by snapshotters that implement Cleaner.
const CapabilityCleanup = "cleanup"

// AdaptInfo exposes an Info to Walk filters as containerd does: name,
// parent and kind are always present (a root's parent is the value ""),
// labels.<key> is present when the label is set.
func AdaptInfo(info Info) filters.Adaptor {
	return filters.AdaptorFunc(func(path []string) (string, bool) {
		if len(path) == 0 {
			return "", false
		}
		switch path[0] {
		case "name":
			return info.Name, true
		case "parent":
			return info.Parent, true
		case "kind":
			if info.Kind == KindUnknown {
				return "", false
			}
			return info.Kind.String(), true
		case "labels":
			return filters.MapField(info.Labels, path[1:])
		}
		return "", false
	})
}
