// Package check is keel's fsck (`keel check`, `keeld check`): it verifies
// keeld's metadata against its plugins and its dirs, reports each problem
// with its fix, and on request applies the fixes that are safe.
//
// The checks, in the order they are reported:
//
//   - leftover: a mount, socket or temporary dir a killed keeld left under
//     its state dir (the scan keeld's start sweeps with, see Leftovers).
//     Safe to remove: the patterns name only keeld's own temporary paths,
//     and online those of the running keeld are spared.
//   - blob: a committed blob whose bytes do not hash to its digest (safe to
//     remove: no reader can use wrong bytes, and a pull fetches them
//     again); a record whose blob the plugin lost (safe to drop: the record
//     points at nothing); a blob no namespace records (safe to remove:
//     garbage collection would, under the same digest lock).
//   - snapshot: a record whose snapshot its plugin lost (its record is
//     dropped only when no child, container or commit refers to it); a
//     record whose parent has no record, or whose plugin snapshot has
//     another parent (not repaired: the chain must be unpacked again); a
//     plugin snapshot no record refers to (safe to remove: records are
//     written before plugin snapshots are made, so it can never become
//     referenced, as garbage collection relies on too).
//   - ingest: a partial ingest no lease holds, with its age; an ingest no
//     record refers to; a record whose ingest is gone. Aborting is safe
//     only offline (online a writer may be between opening an ingest and
//     recording it, or writing without a lease); dropping a record whose
//     ingest is gone is always safe.
//   - task: a task whose container record is gone (deleted when it has
//     stopped: nothing runs and nothing can reach it), a task whose shim
//     died (deleted: the runtime killed the container and kept its exit;
//     deleting it drops the record and unmounts its rootfs), a shim that
//     does not answer (never repaired: a shim is dead only when its
//     process is gone).
package check

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Kinds of problem.
const (
	KindLeftover = "leftover"
	KindBlob     = "blob"
	KindSnapshot = "snapshot"
	KindIngest   = "ingest"
	KindTask     = "task"
)

// Problem is one thing found wrong.
type Problem struct {
	Kind string `json:"kind"`
	// Object names what is wrong: a path, a digest,
	// "<namespace>/<snapshotter>/<key>", "<snapshotter>/<backend key>",
	// "<namespace>/<ingest ref>", "<runtime>/<task id>".
	Object  string `json:"object"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
	// Safe tells that Run with repair applies Fix itself.
	Safe        bool   `json:"safe"`
	Repaired    bool   `json:"repaired,omitempty"`
	RepairError string `json:"repair_error,omitempty"`

	repair func(context.Context) error
}

// Report is the outcome of a check.
type Report struct {
	Problems []Problem `json:"problems"`
	// Errors are checks that could not run; the report is then incomplete.
	Errors []string `json:"errors,omitempty"`
}

// Unrepaired counts the problems still there.
func (r Report) Unrepaired() int {
	n := 0
	for _, p := range r.Problems {
		if !p.Repaired {
			n++
		}
	}
	return n
}

// Checker checks one keeld's data.
type Checker struct {
	// DB is keeld's metadata, with its plugin views registered
	// (metadata.NewContentStore, metadata.NewSnapshotter): the checks read
	// the plugins behind them.
	DB *metadata.DB
	// Runtimes are the runtime plugins, by name.
	Runtimes map[string]runtime.Runtime
	// State is keeld's state dir; API its socket.
	State string
	API   string
	// Offline says that no keeld runs (Run's caller holds the metadata
	// lock): whatever is left over is stale and no ingest has a writer.
	Offline bool
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger hclog.Logger
}

// Run runs every check, then, with repair, applies the safe fixes.
func (c *Checker) Run(ctx context.Context, repair bool) Report {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	var rep Report
	for _, step := range []struct {
		name string
		fn   func(context.Context) ([]Problem, error)
	}{
		{"leftovers", c.leftovers},
		{"blobs", c.blobs},
		{"snapshots", c.snapshots},
		{"ingests", c.ingests},
		{"tasks", c.tasks},
	} {
		ps, err := step.fn(ctx)
		rep.Problems = append(rep.Problems, ps...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", step.name, err))
		}
	}
	if rep.Problems == nil {
		rep.Problems = []Problem{}
	}
	if !repair {
		return rep
	}
	for i := range rep.Problems {
		p := &rep.Problems[i]
		if !p.Safe || p.repair == nil {
			continue
		}
		if err := p.repair(ctx); err != nil {
			p.RepairError = err.Error()
			c.Logger.Warn("repair failed", "kind", p.Kind, "object", p.Object, "error", err)
			continue
		}
		p.Repaired = true
		c.Logger.Info("repaired", "kind", p.Kind, "object", p.Object, "fix", p.Fix)
	}
	return rep
}

// age prints how long ago t was, to the second.
func (c *Checker) age(t time.Time) string {
	if t.IsZero() {
		return "unknown age"
	}
	return c.Now().Sub(t).Round(time.Second).String() + " old"
}

// joinErrs joins errs into one error, nil for none.
func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}
