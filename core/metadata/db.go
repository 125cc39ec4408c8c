package metadata

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// DB is keeld's metadata database.
type DB struct {
	path string
	db   *bolt.DB

	recoverMu sync.Mutex
	recovered map[string]bool // snapshotters whose pending records are resolved

	// seqMu guards the block of sequence numbers nextSeq hands out.
	seqMu            sync.Mutex
	seqNext, seqLast uint64

	digestLocks digestLocks

	// The plugin views (set by NewContentStore and NewSnapshotter) and the
	// garbage collection hooks, see gc.go.
	regMu      sync.Mutex
	reg        backends
	gcMu       sync.Mutex // one collection at a time
	gcTrigger  func()
	afterSweep func()
	ifRunning  func(context.Context) context.Context // SetIfRunning

	heldMu sync.Mutex
	held   map[leaseKey]int // see Leases.Hold

	// writingMu guards writers, the backend ingest refs with a writer open
	// in this process; a collection removes an ingest under it.
	writingMu sync.Mutex
	writers   map[string]int
}

// writing marks the backend ingest bref as being written until done is
// called (more than once is fine): the collector keeps it meanwhile.
func (db *DB) writing(bref string) (done func()) {
	db.writingMu.Lock()
	defer db.writingMu.Unlock()
	if db.writers == nil {
		db.writers = map[string]int{}
	}
	db.writers[bref]++
	var once sync.Once
	return func() {
		once.Do(func() {
			db.writingMu.Lock()
			defer db.writingMu.Unlock()
			if db.writers[bref]--; db.writers[bref] <= 0 {
				delete(db.writers, bref)
			}
		})
	}
}

// isWriting tells whether a writer of this process holds bref.
func (db *DB) isWriting(bref string) bool {
	db.writingMu.Lock()
	defer db.writingMu.Unlock()
	return db.writers[bref] > 0
}

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock another process
	// holds; a second keeld on the same root fails after it. Default 1s.
	Timeout time.Duration
	// NoSync skips fsync after each commit: for tests only.
	NoSync bool
}

// DefaultTimeout is the lock wait when Options.Timeout is zero.
const DefaultTimeout = time.Second

// Open opens (or creates) the database at path and brings its schema to the
// current version. A database held by another process is Unavailable after
// opts.Timeout; one written by a newer keeld is FailedPrecondition.
func Open(path string, opts Options) (*DB, error) {
	return open(path, opts, migrations)
}

func open(path string, opts Options, ms []migration) (*DB, error) {
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	// The freelist is rebuilt at open rather than written at each commit
	// (as etcd does): commits write less, and a crash loses nothing, the
	// freelist being derived from the pages.
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("metadata %s: locked by another process (is another keeld running on this root?): %w", path, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	db := &DB{path: path, db: bdb}
	if err := db.migrate(ms); err != nil {
		bdb.Close()
		return nil, err
	}
	return db, nil
}

// migrate runs, in one transaction, the migrations the database has not
// had, and records the version.
func (db *DB) migrate(ms []migration) error {
	want := currentVersion(ms)
	return db.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		have := 0
		if v := meta.Get(keyVersion); v != nil {
			n, k := binary.Uvarint(v)
			if k <= 0 {
				return fmt.Errorf("metadata %s: bad schema version: %w", db.path, errdefs.ErrDataLoss)
			}
			have = int(n)
		} else if tx.Bucket(bucketV1) == nil {
			// A new database starts at the current schema.
			have = want
		}
		if have > want {
			return fmt.Errorf("metadata %s: schema version %d is newer than this keeld's %d: %w", db.path, have, want, errdefs.ErrFailedPrecondition)
		}
		for _, m := range ms {
			if m.version <= have {
				continue
			}
			if err := m.migrate(tx); err != nil {
				return fmt.Errorf("metadata %s: migration %d (%s): %w", db.path, m.version, m.name, err)
			}
		}
		if _, err := tx.CreateBucketIfNotExists(bucketV1); err != nil {
			return err
		}
		return meta.Put(keyVersion, binary.AppendUvarint(nil, uint64(want)))
	})
}

// Version is the schema version of the open database.
func (db *DB) Version() (int, error) {
	var v uint64
	err := db.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			v, _ = binary.Uvarint(b.Get(keyVersion))
		}
		return nil
	})
	return int(v), err
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close closes the database and releases its lock.
func (db *DB) Close() error { return db.db.Close() }

// seqBlock is how many sequence numbers nextSeq reserves at a time.
const seqBlock = 256

// nextSeq hands out a number of the meta bucket's sequence, never handed
// out before, across restarts too: numbers are reserved a block at a
// time, durably, before any is handed out.
func (db *DB) nextSeq() (uint64, error) {
	db.seqMu.Lock()
	defer db.seqMu.Unlock()
	if db.seqNext == 0 || db.seqNext > db.seqLast {
		var first, last uint64
		if err := db.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketMeta)
			first, last = b.Sequence()+1, b.Sequence()+seqBlock
			return b.SetSequence(last)
		}); err != nil {
			return 0, err
		}
		db.seqNext, db.seqLast = first, last
	}
	n := db.seqNext
	db.seqNext++
	return n, nil
}

func (db *DB) view(fn func(*bolt.Tx) error) error   { return db.db.View(fn) }
func (db *DB) update(fn func(*bolt.Tx) error) error { return db.db.Update(fn) }
