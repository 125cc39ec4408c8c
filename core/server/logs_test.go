package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/crilog"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// records makes records from "stream tag content" specs (o: stdout, e:
// stderr; F or P), a second apart from t0.
func records(t0 time.Time, specs ...string) []crilog.Record {
	var out []crilog.Record
	for i, s := range specs {
		f := strings.SplitN(s, " ", 3)
		r := crilog.Record{Time: t0.Add(time.Duration(i) * time.Second), Stream: crilog.Stdout, Partial: f[1] == "P", Content: []byte(f[2])}
		if f[0] == "e" {
			r.Stream = crilog.Stderr
		}
		out = append(out, r)
	}
	return out
}

func contents(recs []crilog.Record) string {
	var b []string
	for _, r := range recs {
		b = append(b, string(r.Content))
	}
	return strings.Join(b, ",")
}

func TestTailLines(t *testing.T) {
	t0 := time.Now()
	// Lines: "a", "b1b2" (parts, with an stderr line between), "x", "c",
	// and an unended "d".
	recs := records(t0, "o F a", "o P b1", "e F x", "o F b2", "o F c", "o P d")
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{-1, "a,b1,x,b2,c,d"},
		{0, ""},
		{1, "d"},
		{2, "c,d"},
		{3, "x,c,d"}, // b began before x: none of it
		{4, "b1,x,b2,c,d"},
		{5, "a,b1,x,b2,c,d"},
		{50, "a,b1,x,b2,c,d"},
	} {
		if got := contents(tailLines(recs, tc.n)); got != tc.want {
			t.Errorf("tail %d = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestLineFilter(t *testing.T) {
	t0 := time.Now()
	recs := records(t0, "o F a", "o P b1", "e F x", "o F b2", "o F c")
	for _, tc := range []struct {
		name  string
		since time.Time
		want  string
	}{
		{"none", time.Time{}, "a,b1,x,b2,c"},
		{"from the start", t0, "a,b1,x,b2,c"},
		{"mid-line: the line goes whole", t0.Add(2 * time.Second), "x,c"},
		{"at a line's first part", t0.Add(time.Second), "b1,x,b2,c"},
		{"after all", t0.Add(time.Hour), ""},
	} {
		f := &lineFilter{since: tc.since, keep: map[string]*bool{}}
		var kept []crilog.Record
		for _, r := range recs {
			if f.pass(r) {
				kept = append(kept, r)
			}
		}
		if got := contents(kept); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// oldRuntime stands for a runtime older than logs: it keeps the IO it
// was given but for the fields it does not know.
type oldRuntime struct {
	runtime.Runtime
	echoLog bool
	deleted []string
}

func (r *oldRuntime) State(_ context.Context, id, _ string) (runtime.TaskState, error) {
	st := runtime.TaskState{ID: id, Status: runtime.StatusCreated}
	if r.echoLog {
		st.IO.LogPath = "/x/container.log"
	}
	return st, nil
}

func (r *oldRuntime) Delete(_ context.Context, id, _ string) (runtime.ExitStatus, error) {
	r.deleted = append(r.deleted, id)
	return runtime.ExitStatus{}, nil
}

// TestCheckLogKept: a runtime that ignored the log it was asked for has
// its task deleted again, and the create fails FailedPrecondition; one
// that took it is left alone.
func TestCheckLogKept(t *testing.T) {
	s := &Server{}
	io := runtime.IO{LogPath: "/x/container.log"}
	old := &oldRuntime{}
	if err := s.checkLogKept(t.Context(), old, "old", "ns--c", io); !errdefs.IsFailedPrecondition(err) || len(old.deleted) != 1 {
		t.Errorf("runtime that ignored the log: %v, deleted %v; want FailedPrecondition and the task deleted", err, old.deleted)
	}
	knows := &oldRuntime{echoLog: true}
	if err := s.checkLogKept(t.Context(), knows, "new", "ns--c", io); err != nil || len(knows.deleted) != 0 {
		t.Errorf("runtime that took the log: %v, deleted %v", err, knows.deleted)
	}
	if err := s.checkLogKept(t.Context(), old, "old", "ns--d", runtime.IO{}); err != nil {
		t.Errorf("no log asked: %v", err)
	}
}
