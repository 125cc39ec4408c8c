package metrics

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestPullResult: a pull counts under success or the code its caller
// gets.
func TestPullResult(t *testing.T) {
	m := New()
	for _, err := range []error{nil, nil, fmt.Errorf("image %q: %w", "x", errdefs.ErrNotFound), context.Canceled, errors.New("plain")} {
		m.StartPull().Done(err)
	}
	fams := gather(t, m.pulls)
	for result, want := range map[string]float64{"success": 2, "NotFound": 1, "Canceled": 1, "Unknown": 1} {
		if v, _ := value(fams, "keel_pulls_total", map[string]string{"result": result}); v != want {
			t.Errorf("pulls{%s}: %v, want %v", result, v, want)
		}
	}
}

type collector func(gc.Options) (gc.Report, error)

func (c collector) GarbageCollect(_ context.Context, opts gc.Options) (gc.Report, error) {
	return c(opts)
}

// TestGCCounts: runs count by result (dry runs not at all), and the bytes
// of the blobs and ingests removed add up.
func TestGCCounts(t *testing.T) {
	m := New()
	c := m.GC(collector(func(opts gc.Options) (gc.Report, error) {
		if opts.DryRun {
			return gc.Report{Removed: []gc.Object{{Kind: gc.KindContent, Size: 1 << 30}}}, nil
		}
		return gc.Report{Removed: []gc.Object{
			{Kind: gc.KindContent, Size: 100}, {Kind: gc.KindIngest, Size: 20}, {Kind: gc.KindSnapshot}, {Kind: gc.KindLease},
		}, Errors: []string{"snapshotter: busy"}}, nil
	}))
	failing := m.GC(collector(func(gc.Options) (gc.Report, error) { return gc.Report{}, errors.New("boom") }))
	c.GarbageCollect(t.Context(), gc.Options{})
	c.GarbageCollect(t.Context(), gc.Options{DryRun: true})
	failing.GarbageCollect(t.Context(), gc.Options{})
	runs := gather(t, m.gcRuns)
	for result, want := range map[string]float64{"partial": 1, "error": 1, "success": 0} {
		if v, _ := value(runs, "keel_gc_runs_total", map[string]string{"result": result}); v != want {
			t.Errorf("gc runs{%s}: %v, want %v", result, v, want)
		}
	}
	if v, _ := value(gather(t, m.gcFreed), "keel_gc_freed_bytes_total", nil); v != 120 {
		t.Errorf("freed %v bytes, want 120", v)
	}
}
