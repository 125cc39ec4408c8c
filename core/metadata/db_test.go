package metadata

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func newDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "meta.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	// bbolt's flock is per open file, so a second Open in this process
	// waits like a second keeld would.
	_, err = Open(path, Options{Timeout: 100 * time.Millisecond})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second open = %v, want Unavailable naming %s", err, path)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second open took %v, want fast failure", d)
	}
	db.Close()
	db2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	db2.Close()
}

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	// A fixture at version 1 with some data.
	db, err := open(path, Options{NoSync: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Version(); v != baseVersion {
		t.Fatalf("new db version = %d, want %d", v, baseVersion)
	}
	if _, err := db.Namespaces().Create(t.Context(), Namespace{Name: "ns1"}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var ran []int
	mark := func(v int) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			ran = append(ran, v)
			_, err := tx.Bucket(bucketV1).Bucket([]byte("ns1")).CreateBucketIfNotExists([]byte("m" + string(rune('0'+v))))
			return err
		}
	}
	ms := []migration{{2, "two", mark(2)}, {3, "three", mark(3)}}
	for _, want := range [][]int{{2, 3}, nil} { // the second open has nothing to do
		ran = nil
		db, err = open(path, Options{NoSync: true}, ms)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := db.Version(); v != 3 {
			t.Fatalf("version = %d, want 3", v)
		}
		db.Close()
		if len(ran) != len(want) || (len(want) > 0 && (ran[0] != want[0] || ran[1] != want[1])) {
			t.Fatalf("ran %v, want %v", ran, want)
		}
	}

	// A failing migration leaves the database as it was.
	path2 := filepath.Join(t.TempDir(), "meta.db")
	db, _ = open(path2, Options{NoSync: true}, nil)
	db.Namespaces().Create(t.Context(), Namespace{Name: "ns1"})
	db.Close()
	boom := errors.New("boom")
	_, err = open(path2, Options{NoSync: true}, []migration{{2, "ok", mark(2)}, {3, "bad", func(*bolt.Tx) error { return boom }}})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	db, _ = open(path2, Options{NoSync: true}, nil)
	if v, _ := db.Version(); v != 1 {
		t.Fatalf("version after failed migration = %d, want 1", v)
	}
	db.Close()

	// A database from a newer keeld is refused.
	_, err = open(path, Options{NoSync: true}, nil)
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("open newer db = %v, want FailedPrecondition", err)
	}
}
