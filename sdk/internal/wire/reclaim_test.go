package wire

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
)

// sink keeps the test's allocations from being optimised away.
var sink [][]byte

func TestReclaimGivesMemoryBack(t *testing.T) {
	runtime.GC()
	r := newReclaimer(time.Hour, 8<<20, PluginWork)
	if r.reclaim() {
		t.Fatal("reclaimed with nothing gained since the start")
	}
	// 64 MiB touched and dropped: the heap keeps it until reclaimed.
	for range 64 {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		sink = append(sink, b)
	}
	sink = nil
	before := retained()
	if !r.reclaim() {
		t.Fatalf("not reclaimed after 64 MiB allocated (%d MiB retained)", before>>20)
	}
	if after := retained(); after > before-32<<20 {
		t.Fatalf("retained %d MiB before reclaim, %d MiB after: want 32 MiB or more back", before>>20, after>>20)
	}
	if r.reclaim() {
		t.Fatal("reclaimed twice with nothing gained in between")
	}
}

// A quiet period starts when the last call in flight ends, not before;
// the runtime's event stream and go-plugin's own streams do not count.
func TestReclaimAfterQuiet(t *testing.T) {
	r := newReclaimer(time.Millisecond, 0, PluginWork)
	r.base = 0
	reclaimed := func() bool {
		r.runMu.Lock()
		defer r.runMu.Unlock()
		return r.base != 0
	}
	events := r.begin(pluginv1.Runtime_Events_FullMethodName)
	defer events()
	stdio := r.begin("/plugin.GRPCStdio/StreamStdio")
	defer stdio()
	first := r.begin("/keel.plugin.v1.Resolver/Fetch")
	second := r.begin("/keel.plugin.v1.Resolver/Fetch")
	first()
	r.mu.Lock()
	armed := r.timer != nil
	r.mu.Unlock()
	if armed {
		t.Fatal("quiet period started with a call in flight")
	}
	second()
	deadline := time.Now().Add(10 * time.Second)
	for !reclaimed() {
		if time.Now().After(deadline) {
			t.Fatal("no reclaim within 10s of a quiet period of 1ms")
		}
		time.Sleep(time.Millisecond)
	}
}

// retained is the memory the Go runtime holds from the system: what it
// mapped less what it released.
func retained() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}
