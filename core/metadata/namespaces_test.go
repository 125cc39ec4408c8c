package metadata

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestNamespaces(t *testing.T) {
	ctx := t.Context()
	s := newDB(t).Namespaces()

	for _, tc := range []struct {
		desc  string
		ns    Namespace
		check func(error) bool
	}{
		{"create", Namespace{Name: "ns1", Labels: map[string]string{"a": "1"}}, nil},
		{"create other", Namespace{Name: "ns2"}, nil},
		{"exists", Namespace{Name: "ns1"}, errdefs.IsAlreadyExists},
		{"bad name", Namespace{Name: "a/b"}, errdefs.IsInvalidArgument},
		{"empty label key", Namespace{Name: "ns3", Labels: map[string]string{"": "x"}}, errdefs.IsInvalidArgument},
		{"huge label", Namespace{Name: "ns3", Labels: map[string]string{"k": strings.Repeat("x", maxLabelSize)}}, errdefs.IsInvalidArgument},
		{"labels too large together", Namespace{Name: "ns3", Labels: manyLabels(maxLabelsSize/maxLabelSize + 1)}, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := s.Create(ctx, tc.ns)
			if tc.check != nil {
				if !tc.check(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || got.Name != tc.ns.Name || !maps.Equal(got.Labels, tc.ns.Labels) {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}

	if _, err := s.Get(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("get missing = %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "ns1" || list[1].Name != "ns2" {
		t.Fatalf("list = %+v, %v", list, err)
	}

	for _, tc := range []struct {
		desc   string
		labels map[string]string
		paths  []string
		want   map[string]string
		check  func(error) bool
	}{
		{"set one", map[string]string{"b": "2", "c": "3"}, []string{"labels.b"}, map[string]string{"a": "1", "b": "2"}, nil},
		{"remove one", nil, []string{"labels.a"}, map[string]string{"b": "2"}, nil},
		{"replace all", map[string]string{"x": "y"}, []string{"labels"}, map[string]string{"x": "y"}, nil},
		{"no paths replaces", map[string]string{"z": "1"}, nil, map[string]string{"z": "1"}, nil},
		{"bad path", nil, []string{"name"}, nil, errdefs.IsInvalidArgument},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := s.Update(ctx, Namespace{Name: "ns1", Labels: tc.labels}, tc.paths...)
			if tc.check != nil {
				if !tc.check(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || !maps.Equal(got.Labels, tc.want) {
				t.Fatalf("got %+v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := s.Update(ctx, Namespace{Name: "nope"}); !errdefs.IsNotFound(err) {
		t.Fatalf("update missing = %v", err)
	}

	if err := s.Delete(ctx, "ns2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "ns2"); !errdefs.IsNotFound(err) {
		t.Fatalf("delete twice = %v", err)
	}
}

func TestNamespaceDeleteRefusedWhileHolding(t *testing.T) {
	ctx := t.Context()
	db := newDB(t)
	s := db.Namespaces()
	for _, tc := range []struct {
		what string
		path [][]byte
	}{
		{"images", [][]byte{bucketImages}},
		{"containers", [][]byte{bucketConts}},
		{"leases", [][]byte{bucketLeases}},
		{"content", [][]byte{bucketContent, bucketBlob}},
		{"ingests", [][]byte{bucketContent, bucketIngests}},
		{"snapshots (native)", [][]byte{bucketSnaps, []byte("native")}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if _, err := s.Create(ctx, Namespace{Name: "held"}); err != nil {
				t.Fatal(err)
			}
			err := db.update(func(tx *bolt.Tx) error {
				b, err := createBucketPath(tx, append([][]byte{bucketV1, []byte("held")}, tc.path...)...)
				if err != nil {
					return err
				}
				return b.Put([]byte("x"), []byte("y"))
			})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Delete(ctx, "held")
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.what) {
				t.Fatalf("delete = %v, want FailedPrecondition naming %s", err, tc.what)
			}
			// Emptied, it goes.
			db.update(func(tx *bolt.Tx) error {
				return bucketPath(tx, append([][]byte{bucketV1, []byte("held")}, tc.path...)...).Delete([]byte("x"))
			})
			if err := s.Delete(ctx, "held"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// manyLabels makes n labels of nearly maxLabelSize bytes each.
func manyLabels(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%05d", i)] = strings.Repeat("x", maxLabelSize-16)
	}
	return m
}
