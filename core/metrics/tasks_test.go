package metrics

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/keel-runtime/keel/core/events"
	"github.com/keel-runtime/keel/sdk/runtime"
	"github.com/keel-runtime/keel/sdk/runtime/cgmetrics"
)

// source is a Source of function fields: the failures a real runtime
// cannot produce on demand (one task's Stats stuck while the others
// answer).
type source struct {
	tasks func(context.Context) ([]Task, error)
	stats func(context.Context, Task) (runtime.Stats, error)
}

func (s source) Tasks(ctx context.Context) ([]Task, error) { return s.tasks(ctx) }
func (s source) Stats(ctx context.Context, t Task) (runtime.Stats, error) {
	return s.stats(ctx, t)
}
func (s source) Records(context.Context) (map[string]int, map[string]int, error) {
	return map[string]int{"default": 2}, map[string]int{"default": 3}, nil
}

func running(ids ...string) func(context.Context) ([]Task, error) {
	return func(context.Context) ([]Task, error) {
		var out []Task
		for _, id := range ids {
			out = append(out, Task{Namespace: "default", ID: id, Runtime: "runc", Status: runtime.StatusRunning})
		}
		return out, nil
	}
}

// v1Stats is a cgroup v1 message with a CPU total of cpu.
func v1Stats(t testing.TB, cpu uint64) runtime.Stats {
	b, err := proto.Marshal(&v1.Metrics{CPU: &v1.CPUStat{Usage: &v1.CPUUsage{Total: cpu, PerCPU: []uint64{cpu}}}, Pids: &v1.PidsStat{Current: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return runtime.Stats{TypeURL: cgmetrics.TypeURLV1, Data: b}
}

// gather registers c alone and gathers it.
func gather(t testing.TB, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// value is the value of the metric of fams[name] whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			return m.GetGauge().GetValue() + m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestTasksDeadline: a task whose Stats never answer is left out of the
// scrape, which ends at the deadline and counts it; the others are there.
func TestTasksDeadline(t *testing.T) {
	src := source{tasks: running("ok", "stuck", "broken"), stats: func(ctx context.Context, tk Task) (runtime.Stats, error) {
		switch tk.ID {
		case "stuck":
			<-ctx.Done()
			return runtime.Stats{}, ctx.Err()
		case "broken":
			return runtime.Stats{TypeURL: "example.com/unknown"}, nil
		}
		return v1Stats(t, 42), nil
	}}
	c := NewTasks(t.Context(), src, nil, TaskOptions{Timeout: 200 * time.Millisecond})
	done := make(chan map[string]*dto.MetricFamily)
	go func() { done <- gather(t, c) }()
	var fams map[string]*dto.MetricFamily
	select {
	case fams = <-done:
	case <-time.After(time.Minute):
		t.Fatal("a stuck task hangs the scrape")
	}
	if v, ok := value(fams, "container_cpu_total_nanoseconds", map[string]string{"container_id": "ok", "namespace": "default"}); v != 42 || !ok {
		t.Errorf("ok's cpu: %v %v", v, ok)
	}
	for _, id := range []string{"stuck", "broken"} {
		if _, ok := value(fams, "container_cpu_total_nanoseconds", map[string]string{"container_id": id}); ok {
			t.Errorf("%s has metrics", id)
		}
	}
	for reason, want := range map[string]float64{"timeout": 1, "error": 1} {
		if v, _ := value(fams, "keel_task_stats_errors_total", map[string]string{"runtime": "runc", "call": "stats", "reason": reason}); v != want {
			t.Errorf("errors{reason=%s}: %v, want %v", reason, v, want)
		}
	}
	if v, _ := value(fams, "keel_tasks", map[string]string{"state": "running"}); v != 3 {
		t.Errorf("keel_tasks{running}: %v", v)
	}
	if v, _ := value(fams, "keel_containers", map[string]string{"namespace": "default"}); v != 3 {
		t.Errorf("keel_containers: %v", v)
	}
}

// TestTasksListFailure: a runtime whose List fails is counted under its
// name; the other runtime's tasks are still collected.
func TestTasksListFailure(t *testing.T) {
	src := source{
		tasks: func(ctx context.Context) ([]Task, error) {
			tasks, _ := running("a")(ctx)
			return tasks, &RuntimeError{Runtime: "other", Err: fmt.Errorf("boom")}
		},
		stats: func(context.Context, Task) (runtime.Stats, error) { return v1Stats(t, 1), nil },
	}
	fams := gather(t, NewTasks(t.Context(), src, nil, TaskOptions{}))
	if v, _ := value(fams, "keel_task_stats_errors_total", map[string]string{"runtime": "other", "call": "list", "reason": "error"}); v != 1 {
		t.Errorf("list errors of other: %v", v)
	}
	if _, ok := value(fams, "container_pids_current", map[string]string{"container_id": "a"}); !ok {
		t.Error("a's metrics missing")
	}
}

// TestTasksParallel: no more than Parallel Stats calls run at once, and
// they do run at once.
func TestTasksParallel(t *testing.T) {
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprint("t", i))
	}
	var now, most atomic.Int32
	var mu sync.Mutex
	arrived := sync.NewCond(&mu)
	src := source{tasks: running(ids...), stats: func(ctx context.Context, tk Task) (runtime.Stats, error) {
		n := now.Add(1)
		defer now.Add(-1)
		mu.Lock()
		if n > most.Load() {
			most.Store(n)
		}
		arrived.Broadcast()
		// Each call waits until 4 are in flight (or the last ones
		// are): the bound is reached, never passed.
		for most.Load() < 4 && ctx.Err() == nil {
			arrived.Wait()
		}
		mu.Unlock()
		return v1Stats(t, 1), nil
	}}
	gather(t, NewTasks(t.Context(), src, nil, TaskOptions{Parallel: 4, Timeout: time.Minute}))
	if m := most.Load(); m != 4 {
		t.Errorf("%d calls at once, want 4", m)
	}
}

// TestTasksOOM: the /tasks/oom events of the exchange count per task,
// until the task is deleted.
func TestTasksOOM(t *testing.T) {
	ex := events.NewExchange(0)
	src := source{tasks: running("a", "b"), stats: func(context.Context, Task) (runtime.Stats, error) { return v1Stats(t, 1), nil }}
	c := NewTasks(t.Context(), src, ex, TaskOptions{})
	oom := func(id string) float64 {
		v, ok := value(gather(t, c), "container_memory_oom_total", map[string]string{"container_id": id, "namespace": "default"})
		if !ok {
			t.Fatalf("no container_memory_oom_total for %s", id)
		}
		return v
	}
	ex.Publish("default", runtime.TopicOOM, events.Task{ID: "a"})
	ex.Publish("default", runtime.TopicOOM, events.Task{ID: "a"})
	ex.Publish("other", runtime.TopicOOM, events.Task{ID: "a"})
	waitFor(t, func() bool { return oom("a") == 2 })
	if v := oom("b"); v != 0 {
		t.Errorf("b: %v OOMs", v)
	}
	ex.Publish("default", runtime.TopicDelete, events.Task{ID: "a"})
	waitFor(t, func() bool { return oom("a") == 0 })
	fams := gather(t, c)
	if f := fams["container_memory_oom_total"]; f.GetType() != dto.MetricType_COUNTER || !strings.Contains(f.GetHelp(), "oom event") {
		t.Errorf("family %v", f)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
