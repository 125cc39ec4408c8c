package gc

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// collectorFunc is a Collector made of a function.
type collectorFunc func(context.Context, Options) (Report, error)

func (f collectorFunc) GarbageCollect(ctx context.Context, opts Options) (Report, error) {
	return f(ctx, opts)
}

// TestSchedulerPeriodic: the tick's collections are Periodic, with the
// scheduler's IngestMaxAge; a trigger's and an on-demand one are not.
func TestSchedulerPeriodic(t *testing.T) {
	runs := make(chan Options, 64)
	s := NewScheduler(collectorFunc(func(_ context.Context, opts Options) (Report, error) {
		select {
		case runs <- opts:
		default: // the test is done reading: Stop must not wait on this
		}
		return Report{}, nil
	}), 20*time.Millisecond, 0, hclog.NewNullLogger())
	s.SetIngestMaxAge(time.Hour)
	s.Start()
	t.Cleanup(s.Stop)

	// next waits for a collection whose Periodic is periodic; the tick
	// may run others meanwhile.
	next := func(what string, periodic bool) Options {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case o := <-runs:
				if o.Periodic == periodic {
					return o
				}
			case <-timeout:
				t.Fatalf("no %s collection", what)
			}
		}
	}
	if o := next("periodic", true); o.IngestMaxAge != time.Hour || o.Ingests || o.DryRun {
		t.Errorf("tick's options: %+v", o)
	}
	s.Trigger()
	if o := next("triggered", false); o.IngestMaxAge != time.Hour {
		t.Errorf("trigger's options: %+v", o)
	}
	if _, err := s.Collect(t.Context(), Options{Ingests: true}); err != nil {
		t.Fatal(err)
	}
	if o := next("on-demand", false); !o.Ingests || o.IngestMaxAge != time.Hour {
		t.Errorf("on-demand options: %+v", o)
	}
}
