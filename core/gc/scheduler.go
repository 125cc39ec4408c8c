package gc

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Collector runs one collection.
type Collector interface {
	GarbageCollect(ctx context.Context, opts Options) (Report, error)
}

// DefaultDebounce is how long the scheduler waits after a trigger for more
// triggers before collecting, so that removing many images collects once.
const DefaultDebounce = 100 * time.Millisecond

// Scheduler runs collections after triggers (debounced) and on a periodic
// tick (so expired leases go even when nothing else changes), both
// Options.Background, and on demand. One collection runs at a time.
type Scheduler struct {
	c        Collector
	logger   hclog.Logger
	interval time.Duration
	debounce time.Duration

	// ingestMaxAge is every collection's Options.IngestMaxAge.
	ingestMaxAge time.Duration

	trigger chan struct{}
	mu      sync.Mutex // one collection at a time
	stop    context.CancelFunc
	done    chan struct{}
}

// NewScheduler returns a scheduler over c; interval 0 disables the tick.
func NewScheduler(c Collector, interval, debounce time.Duration, logger hclog.Logger) *Scheduler {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	return &Scheduler{c: c, logger: logger, interval: interval, debounce: debounce, trigger: make(chan struct{}, 1)}
}

// SetIngestMaxAge sets the age after which collections remove idle
// partial ingests (the config's gc.ingest_max_age); call before Start.
func (s *Scheduler) SetIngestMaxAge(d time.Duration) { s.ingestMaxAge = d }

// Start runs the scheduler's loop until Stop.
func (s *Scheduler) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go s.loop(ctx)
}

// Stop ends the loop and waits for a collection in progress.
func (s *Scheduler) Stop() {
	if s.stop == nil {
		return
	}
	s.stop()
	<-s.done
}

// Trigger asks for a collection soon; triggers within the debounce window
// make one collection.
func (s *Scheduler) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Collect runs a collection now, after any in progress, with the
// scheduler's IngestMaxAge.
func (s *Scheduler) Collect(ctx context.Context, opts Options) (Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts.IngestMaxAge = s.ingestMaxAge
	return s.c.GarbageCollect(ctx, opts)
}

func (s *Scheduler) loop(ctx context.Context) {
	defer close(s.done)
	var tick <-chan time.Time
	if s.interval > 0 {
		t := time.NewTicker(s.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		opts := Options{Background: true}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-s.trigger:
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.debounce):
			}
			// Triggers during the wait are served by this run.
			select {
			case <-s.trigger:
			default:
			}
		}
		r, err := s.Collect(ctx, opts)
		if err != nil {
			s.logger.Warn("garbage collection failed", "error", err)
			continue
		}
		if len(r.Removed) > 0 || len(r.Errors) > 0 {
			s.logger.Info("garbage collected", "removed", len(r.Removed), "errors", len(r.Errors), "duration", r.Duration)
		}
		for _, e := range r.Errors {
			s.logger.Warn("garbage collection: plugin delete failed", "error", e)
		}
	}
}
