package check

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// snapshots compares, per snapshotter, keeld's records with the plugin's
// snapshots, both ways, and checks the parents of each.
func (c *Checker) snapshots(ctx context.Context) ([]Problem, error) {
	_, sns := c.DB.Backends()
	names := make([]string, 0, len(sns))
	for name := range sns {
		names = append(names, name)
	}
	slices.Sort(names)
	used, err := c.containerSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	var out []Problem
	var errs []error
	for _, name := range names {
		ps, err := c.snapshotter(ctx, name, sns[name], used)
		out = append(out, ps...)
		if err != nil {
			errs = append(errs, fmt.Errorf("snapshotter %s: %w", name, err))
		}
	}
	return out, joinErrs(errs)
}

// containerSnapshots returns "<ns>/<snapshotter>/<key>" -> container id.
func (c *Checker) containerSnapshots(ctx context.Context) (map[string]string, error) {
	nss, err := c.DB.Namespaces().List(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]string{}
	for _, ns := range nss {
		cs, err := c.DB.Containers().List(scope.WithNamespace(ctx, ns.Name))
		if err != nil {
			return nil, err
		}
		for _, ct := range cs {
			if ct.SnapshotKey != "" {
				used[ns.Name+"/"+ct.Snapshotter+"/"+ct.SnapshotKey] = ct.ID
			}
		}
	}
	return used, nil
}

func (c *Checker) snapshotter(ctx context.Context, name string, backend snapshot.Snapshotter, used map[string]string) ([]Problem, error) {
	// The plugin is listed before the records are read: a record is
	// removed before its plugin snapshot, so a snapshot listed and then
	// found unreferenced is an orphan for good, unless a call in flight in
	// keeld is about to record it (a Prepare made between its check and
	// its one write): the repair, keeld's own orphan removal, spares those.
	// Snapshots whose records are removed are removed from the plugin in
	// the background: those removals are done before it is listed.
	if err := c.DB.SettleSnapshotRemovals(ctx); err != nil {
		return nil, err
	}
	infos := map[string]snapshot.Info{}
	if err := backend.Walk(ctx, func(_ context.Context, info snapshot.Info) error {
		infos[info.Name] = info
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing the plugin: %w", err)
	}
	records, err := c.DB.SnapshotRecords(name)
	if err != nil {
		return nil, err
	}
	type nsKey struct{ ns, key string }
	byKey := map[nsKey]metadata.SnapshotRecord{}
	ids := map[string]bool{}
	committing := map[nsKey]bool{} // active snapshots a pending commit consumes
	children := map[nsKey]int{}
	for _, r := range records {
		byKey[nsKey{r.Namespace, r.Key}] = r
		ids[r.ID] = true
		if r.Pending && r.CommitFrom != "" {
			committing[nsKey{r.Namespace, r.CommitFrom}] = true
		}
		if r.Parent != "" {
			children[nsKey{r.Namespace, r.Parent}]++
		}
	}

	// Commits the plugin made that no record names yet, the active
	// snapshot's record still there: finished on the plugin's first use.
	finishing := map[string]bool{} // plugin keys: the active and the committed one
	for id, info := range infos {
		if from := info.Labels[metadata.LabelCommittedFrom]; from != "" && !ids[id] && ids[from] {
			finishing[from], finishing[id] = true, true
		}
	}

	var out []Problem
	for _, r := range records {
		if r.Pending {
			continue // being created, or resolved on the plugin's first use
		}
		k := nsKey{r.Namespace, r.Key}
		object := r.Namespace + "/" + name + "/" + r.Key
		info, inPlugin := infos[r.ID]
		if !inPlugin && !committing[k] && !finishing[r.ID] {
			if _, err := backend.Stat(ctx, r.ID); !errdefs.IsNotFound(err) {
				continue // made meanwhile, or the plugin did not answer: not this check's to say
			}
			p := Problem{Kind: KindSnapshot, Object: object,
				Problem: fmt.Sprintf("recorded (plugin key %s) but missing in the plugin", r.ID)}
			switch {
			case children[k] > 0:
				p.Fix = fmt.Sprintf("remove its %d children, then this snapshot (their chain must be unpacked again)", children[k])
			case used[object] != "":
				p.Fix = fmt.Sprintf("remove container %s (keel container rm -n %s %s), then the snapshot", used[object], r.Namespace, used[object])
			default:
				p.Fix = "drop its record (nothing refers to it)"
				p.Safe = true
				p.repair = func(context.Context) error { return c.DB.DropSnapshotRecord(r.Namespace, name, r.Key) }
			}
			out = append(out, p)
			continue
		}
		if r.Parent == "" {
			continue
		}
		parent, ok := byKey[nsKey{r.Namespace, r.Parent}]
		if !ok {
			out = append(out, Problem{Kind: KindSnapshot, Object: object,
				Problem: fmt.Sprintf("its parent %q has no record", r.Parent),
				Fix:     fmt.Sprintf("remove it (keel snapshot rm -n %s --snapshotter %s %s) and unpack its image again", r.Namespace, name, r.Key)})
			continue
		}
		if inPlugin && info.Parent != parent.ID {
			out = append(out, Problem{Kind: KindSnapshot, Object: object,
				Problem: fmt.Sprintf("the plugin's parent is %q, the record's parent %q is plugin key %q", info.Parent, r.Parent, parent.ID),
				Fix:     fmt.Sprintf("remove it (keel snapshot rm -n %s --snapshotter %s %s) and unpack its image again", r.Namespace, name, r.Key)})
		}
	}

	orphans := make([]string, 0, len(infos))
	for id := range infos {
		if !ids[id] && !finishing[id] {
			orphans = append(orphans, id)
		}
	}
	sort.Strings(orphans)
	// One removal takes every orphan, children first, as gc does.
	removeOrphans := sync.OnceValue(func() error {
		_, err := c.DB.RemoveOrphanSnapshots(ctx, name)
		return err
	})
	for _, id := range orphans {
		info := infos[id]
		problem := "in the plugin, but no record refers to it"
		if info.Parent != "" {
			if _, ok := infos[info.Parent]; !ok {
				problem += fmt.Sprintf("; its parent %q is missing in the plugin", info.Parent)
			}
		}
		out = append(out, Problem{Kind: KindSnapshot, Object: name + "/" + id, Problem: problem,
			Fix: "remove it from the plugin (keel gc does too)", Safe: true,
			repair: func(context.Context) error { return removeOrphans() }})
	}
	return out, nil
}
