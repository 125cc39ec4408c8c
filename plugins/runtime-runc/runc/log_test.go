package runc_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/crilog"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// readLog joins the records of the log at path back into each stream's
// output, and counts them.
func readLog(t *testing.T, path string) (map[string]string, int) {
	t.Helper()
	recs, err := crilog.ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*strings.Builder{crilog.Stdout: {}, crilog.Stderr: {}}
	for _, r := range recs {
		out[r.Stream].Write(r.Content)
		if !r.Partial {
			out[r.Stream].WriteByte('\n')
		}
	}
	return map[string]string{crilog.Stdout: out[crilog.Stdout].String(), crilog.Stderr: out[crilog.Stderr].String()}, len(recs)
}

// TestShimWritesLog: the shim keeps a task's output in its CRI log, byte
// for byte and by stream, rotated at the size asked, and reports the exit
// once the output is written.
func TestShimWritesLog(t *testing.T) {
	rt, _ := openDirect(t)
	long := strings.Repeat("a", 20000)
	var lines strings.Builder
	for i := 1; i <= 2000; i++ {
		lines.WriteString(strconv.Itoa(i) + "\n")
	}
	for _, tc := range []struct {
		name          string
		script        string
		terminal      bool
		fifos         bool // stdout and stderr FIFOs with readers beside the log
		maxSize       int64
		maxFiles      int
		stdout        string
		stderr        string
		consecutiveTo int // with rotation: the lines kept end with this one
	}{
		{name: "streams", script: `echo out1; echo err1 >&2; head -c 20000 /dev/zero | tr "\0" a; echo; echo err2 >&2; printf last`,
			stdout: "out1\n" + long + "\nlast", stderr: "err1\nerr2\n"},
		{name: "terminal", script: `echo hi; echo there >&2`, terminal: true, stdout: "hi\r\nthere\r\n"},
		{name: "streams and fifos", script: `echo out1; echo err1 >&2; printf last`, fifos: true,
			stdout: "out1\nlast", stderr: "err1\n"},
		{name: "terminal and fifo", script: `echo hi; printf there`, terminal: true, fifos: true, stdout: "hi\r\nthere"},
		{name: "rotation", script: `seq 1 2000`, maxSize: 4 << 10, maxFiles: 3, consecutiveTo: 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "ctr.log")
			spec := fixture.RuntimeSpec("sh", "-c", tc.script)
			spec.Process.Terminal = tc.terminal
			pio := keelruntime.IO{Terminal: tc.terminal, LogPath: path, LogMaxSize: tc.maxSize, LogMaxFiles: tc.maxFiles}
			teed := map[string]chan string{}
			var release []func()
			if tc.fifos {
				var r func()
				pio.Stdout, teed[crilog.Stdout], r = readFIFO(t, "out")
				release = append(release, r)
				if !tc.terminal {
					pio.Stderr, teed[crilog.Stderr], r = readFIFO(t, "err")
					release = append(release, r)
				}
			}
			id := "log-" + strings.ReplaceAll(tc.name, " ", "-")
			if err := createTask(t, rt, id, &keelruntime.CreateOpts{Spec: spec, IO: pio}); err != nil {
				t.Fatal(err)
			}
			for _, r := range release {
				r()
			}
			if _, err := rt.Start(ctx, id, ""); err != nil {
				t.Fatal(err)
			}
			if st, err := rt.Wait(ctx, id, ""); err != nil || st.Status != 0 {
				t.Fatalf("wait = %+v, %v", st, err)
			}
			if st, err := rt.State(ctx, id, ""); err != nil || st.IO.LogPath != path || st.IO.LogMaxFiles != tc.maxFiles {
				t.Errorf("state io = %+v, %v; want the log", st.IO, err)
			}
			got, n := readLog(t, path)
			for stream, ch := range teed {
				if out := <-ch; out != got[stream] {
					t.Errorf("%s FIFO got %q, the log %q", stream, out, got[stream])
				}
			}
			if tc.consecutiveTo == 0 {
				if got[crilog.Stdout] != tc.stdout || got[crilog.Stderr] != tc.stderr {
					t.Fatalf("log: stdout %q, stderr %q; want %q, %q", trim(got[crilog.Stdout]), got[crilog.Stderr], trim(tc.stdout), tc.stderr)
				}
				return
			}
			files := crilog.Files(path)
			if len(files) != tc.maxFiles {
				t.Errorf("log files %v, want %d", files, tc.maxFiles)
			}
			for _, f := range files {
				if fi, err := os.Stat(f); err != nil || fi.Size() > tc.maxSize {
					t.Errorf("%s: %v, %v; want at most %d bytes", f, fi.Size(), err, tc.maxSize)
				}
			}
			want := lines.String()
			want = want[strings.Index(want, "\n"+strconv.Itoa(tc.consecutiveTo-n+1)+"\n")+1:]
			if got[crilog.Stdout] != want {
				t.Errorf("log kept %d lines, not the last %d in order: %q", n, n, trim(got[crilog.Stdout]))
			}
		})
	}
}

// readFIFO makes a FIFO with a reader, as a client's stdio has: a write
// end of its own keeps the reader from EOF until release (call it once the
// runtime holds its end); then ch gets what was read by EOF.
func readFIFO(t *testing.T, name string) (path string, ch chan string, release func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	hold, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch = make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		ch <- string(b)
	}()
	t.Cleanup(func() { hold.Close() })
	return path, ch, func() { hold.Close() }
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:100] + "…" + s[len(s)-100:]
	}
	return s
}
