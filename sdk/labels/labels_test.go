package labels

import (
	"maps"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestUpdate(t *testing.T) {
	cur := map[string]string{"a": "1", "b": "2"}
	for _, tc := range []struct {
		name   string
		update map[string]string
		paths  []string
		want   map[string]string
	}{
		{"NoPathsReplaces", map[string]string{"c": "3"}, nil, map[string]string{"c": "3"}},
		{"NoPathsDropsEmpty", map[string]string{"c": "3", "d": ""}, nil, map[string]string{"c": "3"}},
		{"AllReplaces", map[string]string{"a": "9"}, []string{"labels"}, map[string]string{"a": "9"}},
		{"AllToNone", nil, []string{"labels"}, nil},
		{"AllDropsEmpty", map[string]string{"a": ""}, []string{"labels"}, nil},
		{"OneSets", map[string]string{"c": "3"}, []string{"labels.c"}, map[string]string{"a": "1", "b": "2", "c": "3"}},
		{"OneOverwrites", map[string]string{"a": "9", "b": "ignored"}, []string{"labels.a"}, map[string]string{"a": "9", "b": "2"}},
		{"OneEmptyDeletes", map[string]string{"a": ""}, []string{"labels.a"}, map[string]string{"b": "2"}},
		{"OneAbsentDeletes", nil, []string{"labels.a"}, map[string]string{"b": "2"}},
		{"OneEmptyUnsetStaysUnset", map[string]string{"z": ""}, []string{"labels.z"}, map[string]string{"a": "1", "b": "2"}},
		{"DottedKey", map[string]string{"io.keel/x": "y"}, []string{"labels.io.keel/x"}, map[string]string{"a": "1", "b": "2", "io.keel/x": "y"}},
		{"AllThenOne", map[string]string{"c": "3"}, []string{"labels", "labels.a"}, map[string]string{"c": "3"}},
		{"LastDeletesAll", map[string]string{}, []string{"labels.a", "labels.b"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(cur)
			got, err := Update(cur, tc.update, tc.paths...)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("Update = %#v, want %#v", got, tc.want)
			}
			if !maps.Equal(cur, before) {
				t.Errorf("current changed to %v", cur)
			}
		})
	}
}

func TestUpdateBadPath(t *testing.T) {
	for _, p := range []string{"labels.", "name", "labelsx", ""} {
		if _, err := Update(nil, nil, p); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Update(%q) = %v, want invalid argument", p, err)
		}
	}
}

func TestClean(t *testing.T) {
	if got := Clean(map[string]string{"a": "", "b": "1"}); !maps.Equal(got, map[string]string{"b": "1"}) {
		t.Errorf("Clean = %v", got)
	}
	if got := Clean(map[string]string{"a": ""}); got != nil {
		t.Errorf("Clean = %#v, want nil", got)
	}
	if got := Clean(nil); got != nil {
		t.Errorf("Clean(nil) = %#v", got)
	}
}
