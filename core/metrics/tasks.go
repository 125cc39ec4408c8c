package metrics

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/runtime/cgmetrics"
)

// Task is one task of a runtime, as a scrape sees it.
type Task struct {
	Namespace, ID, Runtime string
	Status                 runtime.Status
}

// Source is where the task metrics come from: keeld's runtimes.
type Source interface {
	// Tasks lists the tasks of every runtime and namespace. A runtime
	// that fails (or misses ctx's deadline) is named in a RuntimeError
	// joined to err; the other runtimes' tasks are still returned.
	Tasks(ctx context.Context) ([]Task, error)
	// Stats returns a task's cgroup metrics.
	Stats(ctx context.Context, t Task) (runtime.Stats, error)
	// Records counts the images and containers of each namespace.
	Records(ctx context.Context) (images, containers map[string]int, err error)
}

// RuntimeError is a runtime whose tasks could not be listed.
type RuntimeError struct {
	Runtime string
	Err     error
}

func (e *RuntimeError) Error() string { return "runtime " + e.Runtime + ": " + e.Err.Error() }
func (e *RuntimeError) Unwrap() error { return e.Err }

// TaskOptions tune a Tasks collector.
type TaskOptions struct {
	// Timeout bounds one scrape's round of calls (default 2s): a task
	// whose stats miss it is left out of that scrape and counted in
	// keel_task_stats_errors_total{reason="timeout"}.
	Timeout time.Duration
	// Parallel is how many Stats calls run at once (default 16).
	Parallel int
}

// Tasks collects, at each scrape, every running task's cgroup metrics
// (named as containerd names them), its OOM count, the tasks by state and
// the images and containers of each namespace. It is an unchecked
// collector: which families a scrape has depends on the tasks' cgroups.
type Tasks struct {
	src  Source
	opts TaskOptions

	errs *prometheus.CounterVec

	mu   sync.Mutex
	ooms map[taskKey]uint64
	// descs are the Prometheus descriptions of cgmetrics' families, made
	// once for each runtime.
	descs map[descKey]*prometheus.Desc
}

type taskKey struct{ ns, id string }

type descKey struct {
	d       *cgmetrics.Desc
	runtime string
}

var (
	tasksDesc      = prometheus.NewDesc("keel_tasks", "Tasks by namespace, runtime and state, at scrape time.", []string{"namespace", "runtime", "state"}, nil)
	imagesDesc     = prometheus.NewDesc("keel_images", "Image records by namespace, at scrape time.", []string{"namespace"}, nil)
	containersDesc = prometheus.NewDesc("keel_containers", "Container records by namespace, at scrape time.", []string{"namespace"}, nil)
)

// NewTasks returns a collector over src. When sub is not nil it counts
// the /tasks/oom events sub publishes, until ctx ends.
func NewTasks(ctx context.Context, src Source, sub events.Subscriber, opts TaskOptions) *Tasks {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 16
	}
	c := &Tasks{
		src: src, opts: opts,
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_task_stats_errors_total",
			Help: "Calls of a metrics scrape that failed (reason error) or missed the scrape's deadline (reason timeout), by runtime and call (list, stats, records); what they would have brought is left out of that scrape.",
		}, []string{"runtime", "call", "reason"}),
		ooms:  map[taskKey]uint64{},
		descs: map[descKey]*prometheus.Desc{},
	}
	if sub != nil {
		evs := sub.Subscribe(ctx, func(ev events.Envelope) bool {
			return ev.Topic == runtime.TopicOOM || ev.Topic == runtime.TopicDelete
		})
		go c.countOOMs(evs)
	}
	return c
}

// countOOMs counts each task's OOM events, and forgets a deleted task's.
func (c *Tasks) countOOMs(evs <-chan events.Envelope) {
	for ev := range evs {
		t, ok := ev.Event.(events.Task)
		if !ok {
			continue // a marker of events lost: they cannot be counted
		}
		k := taskKey{ev.Namespace, t.ID}
		c.mu.Lock()
		if ev.Topic == runtime.TopicOOM {
			c.ooms[k]++
		} else {
			delete(c.ooms, k)
		}
		c.mu.Unlock()
	}
}

// Describe sends nothing: Tasks is unchecked.
func (c *Tasks) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector: one round of calls, bounded
// by the timeout.
func (c *Tasks) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()

	var wg sync.WaitGroup
	wg.Go(func() { c.collectRecords(ctx, ch) })
	tasks, err := c.src.Tasks(ctx)
	c.countListErrors(ctx, err)
	counts := map[Task]int{}
	var running []Task
	for _, t := range tasks {
		counts[Task{Namespace: t.Namespace, Runtime: t.Runtime, Status: t.Status}]++
		if t.Status == runtime.StatusRunning || t.Status == runtime.StatusPaused {
			running = append(running, t)
		}
	}
	for t, n := range counts {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n), t.Namespace, t.Runtime, t.Status.String())
	}
	samples := c.stats(ctx, running)
	v2 := map[taskKey]bool{}
	for i, t := range running {
		for _, s := range samples[i] {
			if s.Desc == cgmetrics.OOMV2 {
				v2[taskKey{t.Namespace, t.ID}] = true
			}
			ch <- prometheus.MustNewConstMetric(c.desc(s.Desc, t.Runtime), valueType(s.Desc), s.Value, append([]string{t.ID, t.Namespace}, s.LabelValues...)...)
		}
	}
	// The OOM count of every task listed whose cgroup (v1) does not
	// report it itself, even stopped: an OOM often ends the task.
	oom := c.desc(cgmetrics.OOM, "")
	c.mu.Lock()
	for _, t := range tasks {
		if k := (taskKey{t.Namespace, t.ID}); !v2[k] {
			ch <- prometheus.MustNewConstMetric(oom, prometheus.CounterValue, float64(c.ooms[k]), t.ID, t.Namespace)
		}
	}
	c.mu.Unlock()
	wg.Wait()
	c.errs.Collect(ch)
}

// stats asks for the tasks' metrics, opts.Parallel at once, and returns
// each task's samples (none for one that failed or missed the deadline).
func (c *Tasks) stats(ctx context.Context, tasks []Task) [][]cgmetrics.Sample {
	out := make([][]cgmetrics.Sample, len(tasks))
	sem := make(chan struct{}, c.opts.Parallel)
	var wg sync.WaitGroup
	for i, t := range tasks {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			// The rest missed the deadline without a call.
			for _, t := range tasks[i:] {
				c.errs.WithLabelValues(t.Runtime, "stats", "timeout").Inc()
			}
			wg.Wait()
			return out
		}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := c.src.Stats(ctx, t)
			if err == nil {
				out[i], err = cgmetrics.Decode(st.TypeURL, st.Data)
			}
			if err != nil {
				c.errs.WithLabelValues(t.Runtime, "stats", reason(ctx)).Inc()
			}
		})
	}
	wg.Wait()
	return out
}

func (c *Tasks) countListErrors(ctx context.Context, err error) {
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		name := ""
		var re *RuntimeError
		if errors.As(e, &re) {
			name = re.Runtime
		}
		c.errs.WithLabelValues(name, "list", reason(ctx)).Inc()
	}
}

// reason says whether a call failed for the scrape's deadline or otherwise.
func reason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "timeout"
	}
	return "error"
}

func (c *Tasks) collectRecords(ctx context.Context, ch chan<- prometheus.Metric) {
	imgs, ctrs, err := c.src.Records(ctx)
	if err != nil {
		c.errs.WithLabelValues("", "records", reason(ctx)).Inc()
		return
	}
	for ns, n := range imgs {
		ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(n), ns)
	}
	for ns, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(n), ns)
	}
}

// desc is d's Prometheus description. The metrics of a task's cgroup
// carry the constant label runtime, its runtime's name, as containerd's
// do (its container's runtime, e.g. io.containerd.runc.v2); the OOM count
// of the events carries none, as containerd's OOM collector.
func (c *Tasks) desc(d *cgmetrics.Desc, runtime string) *prometheus.Desc {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := descKey{d, runtime}
	pd, ok := c.descs[k]
	if !ok {
		var constLabels prometheus.Labels
		if runtime != "" {
			constLabels = prometheus.Labels{cgmetrics.LabelRuntime: runtime}
		}
		pd = prometheus.NewDesc(d.Name, d.Help, append([]string{cgmetrics.LabelContainerID, cgmetrics.LabelNamespace}, d.Labels...), constLabels)
		c.descs[k] = pd
	}
	return pd
}

func valueType(d *cgmetrics.Desc) prometheus.ValueType {
	if d.Counter {
		return prometheus.CounterValue
	}
	return prometheus.GaugeValue
}
