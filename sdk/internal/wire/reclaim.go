package wire

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// Memory given back after work, by every plugin and by keeld's API. Go
// keeps the heap it grew to during a transfer (the chunks and ranges a pull
// moves through a plugin) until a later collection and its background
// scavenger shrink it, which for a process that then idles means minutes
// with tens of MB resident. So a process gives its free memory back once
// no call that is work has been in flight for reclaimQuiet, when it
// allocated at least reclaimSlack since the last time (a transfer, not a
// few small calls): two collections (sync.Pools keep their buffers through
// one) and debug.FreeOSMemory, a few ms for a plugin's heap.
const (
	reclaimQuiet = time.Second
	reclaimSlack = 8 << 20
)

// PluginWork says whether a plugin's call is work in flight: one of keel's
// plugin calls, except those that last as long as their caller (the
// runtime's event stream). go-plugin's own streams (stdio, broker) last as
// long too.
func PluginWork(method string) bool {
	return strings.HasPrefix(method, "/keel.plugin.v1.") && method != pluginv1.Runtime_Events_FullMethodName
}

// Reclaimer gives memory back once no call that is work has been in flight
// for quiet.
type Reclaimer struct {
	quiet time.Duration
	slack uint64
	work  func(method string) bool

	mu       sync.Mutex // guards inFlight and timer
	inFlight int
	timer    *time.Timer

	runMu sync.Mutex // one reclaim at a time; guards base
	base  uint64     // bytes allocated until the last reclaim (or the start)
}

// NewReclaimer counts the calls work says are work (nil: PluginWork), and
// reclaims reclaimQuiet after the last ends.
func NewReclaimer(work func(method string) bool) *Reclaimer {
	if work == nil {
		work = PluginWork
	}
	return newReclaimer(reclaimQuiet, reclaimSlack, work)
}

func newReclaimer(quiet time.Duration, slack uint64, work func(string) bool) *Reclaimer {
	return &Reclaimer{quiet: quiet, slack: slack, work: work, base: allocated()}
}

// begin notes a call starting; the returned func notes its end, which
// starts the quiet period when it was the last call in flight.
func (r *Reclaimer) begin(method string) (end func()) {
	if !r.work(method) {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight++
	if r.timer != nil {
		r.timer.Stop()
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.inFlight--
		if r.inFlight > 0 {
			return
		}
		if r.timer == nil {
			r.timer = time.AfterFunc(r.quiet, r.quietEnded)
			return
		}
		r.timer.Reset(r.quiet)
	}
}

// quietEnded reclaims unless a call started meanwhile.
func (r *Reclaimer) quietEnded() {
	r.mu.Lock()
	busy := r.inFlight > 0
	r.mu.Unlock()
	if !busy {
		r.reclaim()
	}
}

// reclaim gives free memory back when the process allocated slack or more
// since the last reclaim; it reports whether it did.
func (r *Reclaimer) reclaim() bool {
	r.runMu.Lock()
	defer r.runMu.Unlock()
	now := allocated()
	if now < r.base+r.slack {
		return false
	}
	runtime.GC()
	debug.FreeOSMemory()
	r.base = now
	return true
}

// ServerOptions count each call, unary or streamed, while it runs.
func (r *Reclaimer) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			defer r.begin(info.FullMethod)()
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			defer r.begin(info.FullMethod)()
			return h(srv, ss)
		}),
	}
}

// allocated is the bytes the process allocated on the heap since it started.
func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
