package metadata

import (
	"slices"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestContainers: create, get, list with filters, update of labels and
// spec, delete; refused ids and specs.
func TestContainers(t *testing.T) {
	db := newDB(t)
	ctx := nsCtx(t, "a")
	s := db.Containers()
	spec := []byte(`{"ociVersion":"1.2.0"}`)
	web, err := s.Create(ctx, Container{ID: "web", Image: "busybox:1", Snapshotter: "native", SnapshotKey: "web", Spec: spec, Runtime: "runc", Labels: map[string]string{"tier": "front"}})
	if err != nil {
		t.Fatal(err)
	}
	if web.CreatedAt.IsZero() || string(web.Spec) != string(spec) || web.Labels["tier"] != "front" {
		t.Fatalf("created %+v", web)
	}
	if _, err := s.Create(ctx, Container{ID: "db", Spec: spec, Labels: map[string]string{"tier": "back"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, web); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	for _, bad := range []Container{
		{ID: "", Spec: spec},
		{ID: "a--b", Spec: spec},
		{ID: "a/b", Spec: spec},
		{ID: "x", Spec: []byte("{")},
		{ID: "x", Spec: spec, Snapshotter: "native"},
	} {
		if _, err := s.Create(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("create %+v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := s.Get(nsCtx(t, "b"), "web"); !errdefs.IsNotFound(err) {
		t.Errorf("web in namespace b: %v, want NotFound", err)
	}
	for _, tc := range []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"db", "web"}},
		{[]string{"labels.tier==front"}, []string{"web"}},
		{[]string{"image==busybox:1", "id==db"}, []string{"db", "web"}},
		{[]string{"runtime==runc"}, []string{"web"}},
		// containerd's adaptor: runtime.name, and empty fields are absent.
		{[]string{"runtime.name==runc"}, []string{"web"}},
		{[]string{"image"}, []string{"web"}},
		{[]string{`image==""`}, nil},
		{[]string{`image!=""`}, []string{"web"}},
		{[]string{"image!=busybox:1"}, []string{"db"}},
		{[]string{`labels.x!=""`}, nil},
		{[]string{"labels.tier~=^(front|back)$,id~=^w"}, []string{"web"}},
	} {
		list, err := s.List(ctx, tc.filters...)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("list %v = %v, want %v", tc.filters, ids, tc.want)
		}
	}
	up, err := s.Update(ctx, Container{ID: "web", Labels: map[string]string{"x": "1"}, Spec: []byte(`{"ociVersion":"1.1.0"}`)}, "labels.x", "spec")
	if err != nil {
		t.Fatal(err)
	}
	if up.Labels["tier"] != "front" || up.Labels["x"] != "1" || string(up.Spec) != `{"ociVersion":"1.1.0"}` || !up.UpdatedAt.After(up.CreatedAt) || up.Image != "busybox:1" {
		t.Errorf("updated %+v", up)
	}
	if _, err := s.Update(ctx, Container{ID: "web", Runtime: "other"}, "runtime"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("update of runtime: %v, want InvalidArgument", err)
	}
	if err := s.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "web"); !errdefs.IsNotFound(err) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}

// TestContainerHoldsSnapshot: a container's snapshot (and its parents)
// survive a collection while the record exists and go once it is removed.
func TestContainerHoldsSnapshot(t *testing.T) {
	f := newGCFixture(t)
	ctx := nsCtx(t, "a")
	f.committed(t, ctx, "base", "", nil)
	if _, err := f.sn.Prepare(ctx, "c1-rootfs", "base"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Containers().Create(ctx, Container{ID: "c1", Snapshotter: "native", SnapshotKey: "c1-rootfs", Spec: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if rep := f.collect(t, false); len(rep.Removed) != 0 {
		t.Fatalf("collection with the container removed %v", names(rep.Removed))
	}
	if _, err := f.sn.Stat(ctx, "c1-rootfs"); err != nil {
		t.Fatalf("container snapshot: %v", err)
	}
	if err := f.db.Containers().Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	rep := f.collect(t, false)
	if got, want := names(rep.Removed), sorted("a:native/base", "a:native/c1-rootfs"); !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
}
