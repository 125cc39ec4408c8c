package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The kubelet rotates a container's log by renaming it away and asking
// for a reopen, while the container writes: each record lands whole in
// one file or the other, exactly once, in order per writer.
func TestReopenUnderConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	const writers, perWriter, rotations = 4, 2000, 20
	// Records long enough that a write torn by a reopen would show.
	pad := strings.Repeat("x", 300)
	var wg sync.WaitGroup
	// The writers go on while each reopen runs, but keep at most half a
	// stretch ahead of the rotations, so that every file gets records.
	const stretch = writers * perWriter / (rotations + 1)
	var written, reopened atomic.Int64
	for w := range writers {
		stream := Stdout
		if w%2 == 1 {
			stream = Stderr
		}
		wg.Go(func() {
			for i := range perWriter {
				for written.Load() >= (reopened.Load()+1)*stretch+stretch/2 && reopened.Load() < rotations {
					runtime.Gosched()
				}
				if err := l.Write(stream, false, fmt.Appendf(nil, "w%d %d %s", w, i, pad)); err != nil {
					t.Errorf("write: %v", err)
					written.Add(int64(perWriter - i)) // the rotations go on
					return
				}
				written.Add(1)
			}
		})
	}
	// Rotate as the kubelet does, while they write: rename, then reopen,
	// each time the writers have gone on a stretch.
	var rotated []string
	for n := range rotations {
		for written.Load() < int64(n+1)*stretch {
			runtime.Gosched()
		}
		name := fmt.Sprintf("%s.%d-rotated", path, n)
		if err := os.Rename(path, name); err != nil {
			t.Fatal(err)
		}
		rotated = append(rotated, name)
		if err := l.Reopen(); err != nil {
			t.Fatalf("reopen %d: %v", n, err)
		}
		reopened.Add(1)
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	next := make([]int, writers) // each writer's next number, across the files in order
	for _, file := range append(rotated, path) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Errorf("%s is empty: no write between two reopens", filepath.Base(file))
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s ends within a record", filepath.Base(file))
		}
		for line := range bytes.Lines(b) {
			r, err := ParseRecord(bytes.TrimSuffix(line, []byte("\n")))
			if err != nil {
				t.Fatalf("%s: %q: %v", filepath.Base(file), line, err)
			}
			var w, i int
			var rest string
			if _, err := fmt.Sscanf(string(r.Content), "w%d %d %s", &w, &i, &rest); err != nil || rest != pad || w < 0 || w >= writers {
				t.Fatalf("%s: record %q is not one written", filepath.Base(file), r.Content)
			}
			if i != next[w] {
				t.Fatalf("%s: writer %d's record %d, want %d (lost, repeated or out of order)", filepath.Base(file), w, i, next[w])
			}
			next[w]++
		}
	}
	for w, n := range next {
		if n != perWriter {
			t.Errorf("writer %d: %d records across the files, want %d", w, n, perWriter)
		}
	}
}

func TestReopen(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup runs after "before" was written; reopen's error is
		// checked against wantErr.
		setup   func(t *testing.T, l *File, path string)
		wantErr error
		// want are the files and the records they hold after "after".
		want map[string][]string
	}{
		{
			name:  "renamed away",
			setup: func(t *testing.T, _ *File, path string) { rename(t, path, path+".old") },
			want:  map[string][]string{".old": {"before"}, "": {"after"}},
		},
		{
			// Nobody renamed it: the same file goes on.
			name:  "in place",
			setup: func(*testing.T, *File, string) {},
			want:  map[string][]string{"": {"before", "after"}},
		},
		{
			name:  "removed",
			setup: func(t *testing.T, _ *File, path string) { os.Remove(path) },
			want:  map[string][]string{"": {"after"}},
		},
		{
			// The directory is gone: the error is told, and writing goes
			// on to the file open (renamed with its directory).
			name: "cannot open",
			setup: func(t *testing.T, _ *File, path string) {
				rename(t, filepath.Dir(path), filepath.Dir(path)+"-moved")
			},
			wantErr: os.ErrNotExist,
			want:    map[string][]string{"-moved": {"before", "after"}},
		},
		{
			name:    "closed",
			setup:   func(t *testing.T, l *File, _ string) { l.Close() },
			wantErr: os.ErrClosed,
			want:    map[string][]string{"": {"before"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pod")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "0.log")
			l, err := Open(path, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			if err := l.Write(Stdout, false, []byte("before")); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, l, path)
			if err := l.Reopen(); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Reopen: %v, want %v", err, tc.wantErr)
			}
			l.Write(Stdout, false, []byte("after"))
			l.Close()
			for suffix, want := range tc.want {
				file := path + suffix
				if suffix == "-moved" {
					file = filepath.Join(dir+suffix, "0.log")
				}
				var got []string
				for _, r := range readAll(t, file) {
					got = append(got, string(r.Content))
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("%s: records %q, want %q", file, got, want)
				}
			}
		})
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
