package storage

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// InFlight tracks what the calls of a snapshotter that make a snapshot
// outside its one write transaction hold between their checks and their
// record: the key being made (another call making it is refused), the
// snapshots it stands on (its parent, or the active snapshot a commit
// turns into another; not to be removed meanwhile) and the id its data is
// made under (not an orphan, though no record names it yet). The zero
// value is ready; it is safe for concurrent use.
type InFlight struct {
	mu   sync.Mutex
	keys map[string]int
	pins map[string]int
	ids  map[string]int
}

// Begin registers a call that makes key (none when empty), pinning the
// snapshots pinned names (empty names are skipped), with its data under
// id (none when empty). It is AlreadyExists when another call is making
// key. done unregisters the call; call it once the record is written or
// the data removed.
func (f *InFlight) Begin(key string, pinned []string, id string) (done func(), err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key != "" && f.keys[key] > 0 {
		return nil, fmt.Errorf("snapshot %q: %w (being made)", key, errdefs.ErrAlreadyExists)
	}
	if f.keys == nil {
		f.keys, f.pins, f.ids = map[string]int{}, map[string]int{}, map[string]int{}
	}
	pinned = slices.DeleteFunc(slices.Clone(pinned), func(p string) bool { return p == "" })
	add := func(m map[string]int, k string, n int) {
		if k == "" {
			return
		}
		if m[k] += n; m[k] == 0 {
			delete(m, k)
		}
	}
	add(f.keys, key, 1)
	add(f.ids, id, 1)
	for _, p := range pinned {
		add(f.pins, p, 1)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			add(f.keys, key, -1)
			add(f.ids, id, -1)
			for _, p := range pinned {
				add(f.pins, p, -1)
			}
		})
	}, nil
}

// Pinned tells whether a call in flight stands on the snapshot key.
func (f *InFlight) Pinned(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pins[key] > 0
}

// PinnedKeys are the snapshots calls in flight stand on.
func (f *InFlight) PinnedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.pins))
}

// Making tells whether a call in flight makes data under id.
func (f *InFlight) Making(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id] > 0
}

// MakingIDs are the ids calls in flight make data under.
func (f *InFlight) MakingIDs() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]bool, len(f.ids))
	for id := range f.ids {
		out[id] = true
	}
	return out
}
