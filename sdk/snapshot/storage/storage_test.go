package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// seed makes base (committed) ← child (committed) ← active, and a view of base.
func seed(t *testing.T, s *Store) {
	t.Helper()
	err := s.Update(context.Background(), func(tx *Tx) error {
		steps := []func() error{
			func() error { _, err := tx.Create(snapshot.KindActive, "base-a", ""); return err },
			func() error {
				_, err := tx.Commit("base-a", "base", snapshot.WithLabels(map[string]string{"l": "1"}))
				return err
			},
			func() error { _, err := tx.Create(snapshot.KindActive, "child-a", "base"); return err },
			func() error { _, err := tx.Commit("child-a", "child"); return err },
			func() error { _, err := tx.Create(snapshot.KindActive, "active", "child"); return err },
			func() error { _, err := tx.Create(snapshot.KindView, "view", "base"); return err },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name string
		op   func(tx *Tx) error
		want func(error) bool
	}{
		{"CreateReusedKey", func(tx *Tx) error { _, err := tx.Create(snapshot.KindActive, "active", ""); return err }, errdefs.IsAlreadyExists},
		{"CreateOnCommittedName", func(tx *Tx) error { _, err := tx.Create(snapshot.KindView, "base", ""); return err }, errdefs.IsAlreadyExists},
		{"CreateMissingParent", func(tx *Tx) error { _, err := tx.Create(snapshot.KindActive, "x", "nope"); return err }, errdefs.IsNotFound},
		{"CreateOnActiveParent", func(tx *Tx) error { _, err := tx.Create(snapshot.KindActive, "x", "active"); return err }, errdefs.IsFailedPrecondition},
		{"CreateOnViewParent", func(tx *Tx) error { _, err := tx.Create(snapshot.KindView, "x", "view"); return err }, errdefs.IsFailedPrecondition},
		{"CreateEmptyKey", func(tx *Tx) error { _, err := tx.Create(snapshot.KindActive, "", ""); return err }, errdefs.IsInvalidArgument},
		{"CreateCommitted", func(tx *Tx) error { _, err := tx.Create(snapshot.KindCommitted, "x", ""); return err }, errdefs.IsInvalidArgument},
		{"CommitView", func(tx *Tx) error { _, err := tx.Commit("view", "x"); return err }, errdefs.IsFailedPrecondition},
		{"CommitCommitted", func(tx *Tx) error { _, err := tx.Commit("child", "x"); return err }, errdefs.IsFailedPrecondition},
		{"CommitMissing", func(tx *Tx) error { _, err := tx.Commit("nope", "x"); return err }, errdefs.IsNotFound},
		{"CommitOntoExisting", func(tx *Tx) error { _, err := tx.Commit("active", "base"); return err }, errdefs.IsAlreadyExists},
		{"RemoveParentWithChildren", func(tx *Tx) error { _, _, err := tx.Remove("base"); return err }, errdefs.IsFailedPrecondition},
		{"RemoveParentWithActiveChild", func(tx *Tx) error { _, _, err := tx.Remove("child"); return err }, errdefs.IsFailedPrecondition},
		{"RemoveMissing", func(tx *Tx) error { _, _, err := tx.Remove("nope"); return err }, errdefs.IsNotFound},
		{"InfoMissing", func(tx *Tx) error { _, err := tx.Info("nope"); return err }, errdefs.IsNotFound},
		{"UpdateMissing", func(tx *Tx) error { _, err := tx.UpdateInfo(snapshot.Info{Name: "nope"}); return err }, errdefs.IsNotFound},
		{"UpdateBadField", func(tx *Tx) error { _, err := tx.UpdateInfo(snapshot.Info{Name: "base"}, "parent"); return err }, errdefs.IsInvalidArgument},
		{"WalkBadFilter", func(tx *Tx) error { return tx.Walk(func(snapshot.Info) error { return nil }, "name==") }, errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			seed(t, s)
			err := s.Update(context.Background(), tc.op)
			if !tc.want(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, s)

	var active Snapshot
	err = s.View(ctx, func(tx *Tx) error {
		var err error
		active, err = tx.Get("active")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// ids: base 1, child 2, active 3.
	if active.ID != "3" || active.Kind != snapshot.KindActive || !slices.Equal(active.ParentIDs, []string{"2", "1"}) {
		t.Fatalf("active = %+v", active)
	}

	// Commit keeps the id, moves the child link to the new name, sets labels.
	err = s.Update(ctx, func(tx *Tx) error {
		id, err := tx.Commit("active", "top", snapshot.WithLabels(map[string]string{"a": "b"}))
		if err != nil || id != "3" {
			t.Errorf("commit = %s, %v", id, err)
		}
		info, err := tx.Info("top")
		if err != nil || info.Kind != snapshot.KindCommitted || info.Parent != "child" || info.Labels["a"] != "b" {
			t.Errorf("info = %+v, %v", info, err)
		}
		if _, err := tx.Info("active"); !errdefs.IsNotFound(err) {
			t.Errorf("active key still there: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A second open fails fast while the first holds the file.
	if _, err := Open(path); !errdefs.IsUnavailable(err) {
		t.Fatalf("second open: %v", err)
	}
	// Reopen sees everything; ids are never reused after a remove.
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(ctx, func(tx *Tx) error {
		for _, k := range []string{"top", "view"} {
			if _, _, err := tx.Remove(k); err != nil {
				return err
			}
		}
		if _, _, err := tx.Remove("child"); err != nil {
			return err
		}
		sn, err := tx.Create(snapshot.KindActive, "new", "base")
		if err != nil {
			return err
		}
		if sn.ID != "5" || !slices.Equal(sn.ParentIDs, []string{"1"}) {
			t.Errorf("new = %+v", sn)
		}
		ids, err := tx.IDs()
		if err != nil {
			return err
		}
		if len(ids) != 2 || ids["1"] != "base" || ids["5"] != "new" {
			t.Errorf("ids = %v", ids)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRollback(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	boom := errors.New("copy failed")
	err := s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.Create(snapshot.KindActive, "k", ""); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	s.View(ctx, func(tx *Tx) error {
		if _, err := tx.Info("k"); !errdefs.IsNotFound(err) {
			t.Errorf("rolled back create is visible: %v", err)
		}
		return nil
	})
}

func TestUpdateInfo(t *testing.T) {
	cases := []struct {
		name   string
		labels map[string]string
		paths  []string
		want   map[string]string
	}{
		{"AllByDefault", map[string]string{"x": "y"}, nil, map[string]string{"x": "y"}},
		{"AllLabels", map[string]string{"x": "y"}, []string{"labels"}, map[string]string{"x": "y"}},
		{"OneLabel", map[string]string{"x": "y", "ignored": "z"}, []string{"labels.x"}, map[string]string{"l": "1", "x": "y"}},
		{"DeleteOneLabel", nil, []string{"labels.l"}, nil},
		{"ClearAll", nil, []string{"labels"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			seed(t, s)
			var before, after snapshot.Info
			err := s.Update(context.Background(), func(tx *Tx) error {
				before, _ = tx.Info("base")
				var err error
				after, err = tx.UpdateInfo(snapshot.Info{Name: "base", Labels: tc.labels}, tc.paths...)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(after.Labels) != len(tc.want) {
				t.Fatalf("labels = %v, want %v", after.Labels, tc.want)
			}
			for k, v := range tc.want {
				if after.Labels[k] != v {
					t.Fatalf("labels = %v, want %v", after.Labels, tc.want)
				}
			}
			if after.Kind != snapshot.KindCommitted || after.Updated.Before(before.Updated) || !after.Created.Equal(before.Created) {
				t.Fatalf("before %+v after %+v", before, after)
			}
		})
	}
}

func TestWalk(t *testing.T) {
	cases := []struct {
		filters []string
		want    []string
	}{
		{nil, []string{"active", "base", "child", "view"}},
		{[]string{"kind==committed"}, []string{"base", "child"}},
		{[]string{"kind==view", "kind==active"}, []string{"active", "view"}},
		{[]string{"parent==base"}, []string{"child", "view"}},
		{[]string{"parent"}, []string{"active", "base", "child", "view"}},
		{[]string{`parent!=""`}, []string{"active", "child", "view"}},
		{[]string{`parent==""`}, []string{"base"}},
		{[]string{`labels.l!=""`}, []string{"base"}},
		{[]string{`labels.nope!=""`}, nil},
		{[]string{"labels.l==1"}, []string{"base"}},
		{[]string{`labels."l"`}, []string{"base"}},
		{[]string{"name~=^ch", "name==view"}, []string{"child", "view"}},
		{[]string{"kind==committed,parent!=base"}, []string{"base"}},
	}
	s := open(t)
	seed(t, s)
	for _, tc := range cases {
		var got []string
		err := s.View(context.Background(), func(tx *Tx) error {
			return tx.Walk(func(info snapshot.Info) error {
				got = append(got, info.Name)
				return nil
			}, tc.filters...)
		})
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Walk(%q) = %v, %v; want %v", tc.filters, got, err, tc.want)
		}
	}
}

func TestBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			errs <- s.Batch(ctx, func(tx *Tx) error {
				// Half reuse a key, so batches fail and are retried.
				_, err := tx.Create(snapshot.KindActive, "k"+string(rune('a'+i%20)), "")
				return err
			})
		}()
	}
	var ok, exists int
	for range 40 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errdefs.IsAlreadyExists(err):
			exists++
		default:
			t.Fatal(err)
		}
	}
	if ok != 20 || exists != 20 {
		t.Fatalf("ok %d, exists %d", ok, exists)
	}
	s.View(ctx, func(tx *Tx) error {
		ids, _ := tx.IDs()
		if len(ids) != 20 {
			t.Errorf("ids %v", ids)
		}
		return nil
	})
}

// TestNewID: ids NewID hands out are never handed out again, by NewID or
// Create, across a reopen; those of the last block no snapshot holds are
// unclaimed, and CreateWithID records a snapshot under one.
func TestNewID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	handOut := func() string {
		t.Helper()
		id, err := s.NewID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("id %s handed out twice", id)
		}
		seen[id] = true
		return id
	}
	for range idBlock + 2 {
		handOut()
	}
	recorded := handOut()
	err = s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.CheckCreate(snapshot.KindActive, "a", ""); err != nil {
			return err
		}
		sn, err := tx.CreateWithID(recorded, snapshot.KindActive, "a", "")
		if err == nil && sn.ID != recorded {
			err = fmt.Errorf("recorded under id %s, want %s", sn.ID, recorded)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	unclaimed, err := s.UnclaimedIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(unclaimed) != idBlock-1 || slices.Contains(unclaimed, recorded) {
		t.Errorf("unclaimed = %v: want the last block of %d but %s", unclaimed, idBlock, recorded)
	}
	handOut()
	err = s.Update(ctx, func(tx *Tx) error {
		sn, err := tx.Create(snapshot.KindActive, "b", "")
		if err == nil && seen[sn.ID] {
			err = fmt.Errorf("create reused id %s", sn.ID)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
	err = s.View(ctx, func(tx *Tx) error {
		_, err := tx.CheckCreate(snapshot.KindActive, "a", "")
		return err
	})
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("check of a key in use: %v, want AlreadyExists", err)
	}
}

// TestInFlight: a key being made is taken, a pinned snapshot stays pinned
// until every call pinning it is done, and done may run twice.
func TestInFlight(t *testing.T) {
	var f InFlight
	done1, err := f.Begin("a", []string{"p", ""}, "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Begin("a", nil, "2"); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second begin of a: %v, want AlreadyExists", err)
	}
	done2, err := f.Begin("b", []string{"p"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Pinned("p") || f.Pinned("") || !f.Making("1") || !slices.Equal(f.PinnedKeys(), []string{"p"}) {
		t.Errorf("pinned p %v, making 1 %v, pinned keys %q", f.Pinned("p"), f.Making("1"), f.PinnedKeys())
	}
	done1()
	done1()
	if !f.Pinned("p") || f.Making("1") || len(f.MakingIDs()) != 0 {
		t.Errorf("after one done: pinned p %v, making 1 %v", f.Pinned("p"), f.Making("1"))
	}
	done2()
	if f.Pinned("p") {
		t.Errorf("p still pinned")
	}
	if _, err := f.Begin("a", nil, ""); err != nil {
		t.Errorf("begin of a once done: %v", err)
	}
}
