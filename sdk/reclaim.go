package sdk

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

// Memory given back after work. Go keeps the heap it grew to during a
// transfer (the chunks and ranges a pull moves through a plugin) until a
// later collection and its background scavenger shrink it, which for a
// plugin that then idles means minutes with tens of MB resident. So a
// plugin gives its free memory back once no call has been in flight for
// reclaimQuiet, when it allocated at least reclaimSlack since the last
// time (a transfer, not a few small calls): two collections (sync.Pools
// keep their buffers through one) and debug.FreeOSMemory, a few ms for a
// plugin's heap.
const (
	reclaimQuiet = time.Second
	reclaimSlack = 8 << 20
)

// work says whether a call is work in flight: one of keel's plugin calls,
// except those that last as long as their caller (the runtime's event
// stream). go-plugin's own streams (stdio, broker) last as long too.
func work(method string) bool {
	return strings.HasPrefix(method, "/keel.plugin.v1.") && method != pluginv1.Runtime_Events_FullMethodName
}

// reclaimer runs reclaim once no call has been in flight for quiet.
type reclaimer struct {
	quiet time.Duration
	slack uint64

	mu       sync.Mutex // guards inFlight and timer
	inFlight int
	timer    *time.Timer

	runMu sync.Mutex // one reclaim at a time; guards base
	base  uint64     // bytes allocated until the last reclaim (or the start)
}

func newReclaimer(quiet time.Duration, slack uint64) *reclaimer {
	return &reclaimer{quiet: quiet, slack: slack, base: allocated()}
}

// begin notes a call starting; the returned func notes its end, which
// starts the quiet period when it was the last call in flight.
func (r *reclaimer) begin(method string) (end func()) {
	if !work(method) {
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
func (r *reclaimer) quietEnded() {
	r.mu.Lock()
	busy := r.inFlight > 0
	r.mu.Unlock()
	if !busy {
		r.reclaim()
	}
}

// reclaim gives free memory back when the process allocated slack or more
// since the last reclaim; it reports whether it did.
func (r *reclaimer) reclaim() bool {
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

// serverOptions count each call, unary or streamed, while it runs.
func (r *reclaimer) serverOptions() []grpc.ServerOption {
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
