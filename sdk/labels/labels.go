// Package labels holds the one rule by which every keel store changes the
// labels of an object, containerd's: a label is never stored with the
// value "", and an update that gives a label the empty value deletes it.
package labels

import (
	"fmt"
	"maps"
	"strings"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Update returns current changed along fieldpaths, as containerd's Update
// calls do: "labels" replaces all labels with update, "labels.<key>" sets
// the one label to update[key] (deleting it when that is empty or absent),
// and no fieldpaths means "labels". Any other path is InvalidArgument.
// current is not modified; the result has no empty values and is nil when
// no label is left.
func Update(current, update map[string]string, fieldpaths ...string) (map[string]string, error) {
	if len(fieldpaths) == 0 {
		fieldpaths = []string{"labels"}
	}
	out := maps.Clone(current)
	if out == nil {
		out = map[string]string{}
	}
	for _, p := range fieldpaths {
		key, ok := strings.CutPrefix(p, "labels.")
		switch {
		case p == "labels":
			out = maps.Clone(update)
			if out == nil {
				out = map[string]string{}
			}
		case ok && key != "":
			if v := update[key]; v != "" {
				out[key] = v
			} else {
				delete(out, key)
			}
		default:
			return nil, fmt.Errorf("field path %q: only labels or labels.<key> can be updated: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return Clean(out), nil
}

// Clean returns m without its empty values: what a store keeps of labels
// it is given. It returns nil when none is left, and m itself when it has
// no empty value.
func Clean(m map[string]string) map[string]string {
	n := 0
	for _, v := range m {
		if v != "" {
			n++
		}
	}
	switch {
	case n == 0:
		return nil
	case n == len(m):
		return m
	}
	out := make(map[string]string, n)
	for k, v := range m {
		if v != "" {
			out[k] = v
		}
	}
	return out
}
