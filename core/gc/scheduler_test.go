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

// TestSchedulerBackground: the tick's and a trigger's collections are
// Background, with the scheduler's IngestMaxAge; an on-demand one is not.
func TestSchedulerBackground(t *testing.T) {
	for _, tc := range []struct {
		name       string
		interval   time.Duration
		run        func(t *testing.T, s *Scheduler)
		background bool
		ingests    bool
	}{
		{"tick", 20 * time.Millisecond, func(*testing.T, *Scheduler) {}, true, false},
		{"trigger", 0, func(_ *testing.T, s *Scheduler) { s.Trigger() }, true, false},
		{"on demand", 0, func(t *testing.T, s *Scheduler) {
			if _, err := s.Collect(t.Context(), Options{Ingests: true}); err != nil {
				t.Fatal(err)
			}
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runs := make(chan Options, 64)
			s := NewScheduler(collectorFunc(func(_ context.Context, opts Options) (Report, error) {
				select {
				case runs <- opts:
				default: // the test is done reading: Stop must not wait on this
				}
				return Report{}, nil
			}), tc.interval, 0, hclog.NewNullLogger())
			s.SetIngestMaxAge(time.Hour)
			s.Start()
			t.Cleanup(s.Stop)
			tc.run(t, s)
			select {
			case o := <-runs:
				if o.Background != tc.background || o.Ingests != tc.ingests || o.IngestMaxAge != time.Hour || o.DryRun {
					t.Errorf("options %+v, want Background %v, Ingests %v, the scheduler's IngestMaxAge", o, tc.background, tc.ingests)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no collection")
			}
		})
	}
}
