package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRecord(t *testing.T) {
	at := time.Date(2016, 10, 6, 0, 17, 9, 669794202, time.UTC)
	for _, tc := range []struct {
		name, line string
		want       Record
		err        bool
	}{
		{"full", "2016-10-06T00:17:09.669794202Z stdout F the line", Record{at, Stdout, false, []byte("the line")}, false},
		{"partial", "2016-10-06T00:17:09.669794202Z stderr P part", Record{at, Stderr, true, []byte("part")}, false},
		{"spaces kept", "2016-10-06T00:17:09.669794202Z stdout F  a  b ", Record{at, Stdout, false, []byte(" a  b ")}, false},
		{"empty line", "2016-10-06T00:17:09.669794202Z stdout F ", Record{at, Stdout, false, nil}, false},
		{"empty line, no space", "2016-10-06T00:17:09.669794202Z stdout F", Record{at, Stdout, false, nil}, false},
		{"tag fields", "2016-10-06T00:17:09.669794202Z stdout P:x y", Record{at, Stdout, true, []byte("y")}, false},
		{"offset time", "2016-10-06T02:17:09.669794202+02:00 stdout F x", Record{at, Stdout, false, []byte("x")}, false},
		{"bad time", "yesterday stdout F x", Record{}, true},
		{"bad stream", "2016-10-06T00:17:09.669794202Z stdin F x", Record{}, true},
		{"bad tag", "2016-10-06T00:17:09.669794202Z stdout X x", Record{}, true},
		{"no tag", "2016-10-06T00:17:09.669794202Z stdout", Record{}, true},
		{"nothing", "", Record{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRecord([]byte(tc.line))
			if tc.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseRecord(%q) = %+v, %v; want ErrMalformed", tc.line, got, err)
				}
				return
			}
			if err != nil || !got.Time.Equal(tc.want.Time) || got.Stream != tc.want.Stream ||
				got.Partial != tc.want.Partial || !bytes.Equal(got.Content, tc.want.Content) {
				t.Fatalf("ParseRecord(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestAppendRecordFormat(t *testing.T) {
	at := time.Date(2016, 10, 6, 0, 17, 9, 669794202, time.FixedZone("x", 3600))
	got := string(AppendRecord(nil, Record{Time: at, Stream: Stdout, Content: []byte("the line")}))
	if want := "2016-10-05T23:17:09.669794202Z stdout F the line\n"; got != want {
		t.Errorf("AppendRecord = %q, want %q", got, want)
	}
	got = string(AppendRecord(nil, Record{Time: at.Truncate(time.Second), Stream: Stderr, Partial: true}))
	if want := "2016-10-05T23:17:09.000000000Z stderr P \n"; got != want {
		t.Errorf("AppendRecord = %q, want %q", got, want)
	}
}

// readAll reads every record of the log at path, oldest file first.
func readAll(t *testing.T, path string) []Record {
	t.Helper()
	recs, err := ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// join gives back each stream's bytes from records.
func join(recs []Record) map[string]string {
	out := map[string]*strings.Builder{Stdout: {}, Stderr: {}}
	for _, r := range recs {
		out[r.Stream].Write(r.Content)
		if !r.Partial {
			out[r.Stream].WriteByte('\n')
		}
	}
	return map[string]string{Stdout: out[Stdout].String(), Stderr: out[Stderr].String()}
}

func TestCopyKeepsOutputExactly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 40<<10)
	out := "one\n\n" + long + "\nthree\nno newline"
	errs := "e1\ne2\n"
	var tee bytes.Buffer
	if err := Copy(l, Stdout, strings.NewReader(out), &tee); err != nil {
		t.Fatal(err)
	}
	if err := Copy(l, Stderr, strings.NewReader(errs), nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if tee.String() != out {
		t.Errorf("tee got %d bytes, want %d", tee.Len(), len(out))
	}
	recs := readAll(t, path)
	got := join(recs)
	if got[Stdout] != out || got[Stderr] != errs {
		t.Errorf("joined stdout %d bytes, stderr %q; want %d bytes, %q", len(got[Stdout]), got[Stderr], len(out), errs)
	}
	for _, r := range recs {
		if len(r.Content) > MaxRecord {
			t.Errorf("a record of %d bytes, over MaxRecord", len(r.Content))
		}
	}
	if last := recs[len(recs)-3]; !last.Partial || string(last.Content) != "no newline" {
		t.Errorf("last stdout record = %+v, want a partial %q", last, "no newline")
	}
}

// TestCopyWritesWhatWaits: output that is not a whole line and after
// which the process waits (a prompt, `echo -n hello`) is in the log while
// the process still runs, as a partial record; the rest of its line
// follows as another.
func TestCopyWritesWhatWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Copy(l, Stdout, r, nil) }()
	// The copy ends with the write end, on failure too.
	t.Cleanup(func() { w.Close() })
	if _, err := w.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	// Nothing else comes until the record is there.
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err := ReadAll(path)
		if err == nil && len(recs) == 1 {
			if !recs[0].Partial || string(recs[0].Content) != "hello" {
				t.Fatalf("record %+v, want a partial \"hello\"", recs[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record of \"hello\" while the writer waits: %v, %v", recs, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := w.WriteString(" world\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, path)
	if len(recs) != 2 || recs[1].Partial || join(recs)[Stdout] != "hello world\n" {
		t.Errorf("records %+v, want partial \"hello\" then full \" world\"", recs)
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestCopyOutlivesTee(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Copy(l, Stdout, strings.NewReader("a\nb\n"), failWriter{}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := join(readAll(t, path))[Stdout]; got != "a\nb\n" {
		t.Errorf("log = %q after the tee failed, want every line", got)
	}
}

func TestRotation(t *testing.T) {
	for _, tc := range []struct {
		maxFiles int
	}{{1}, {2}, {3}} {
		t.Run(fmt.Sprint(tc.maxFiles), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "log")
			const maxSize = 4 << 10
			l, err := Open(path, maxSize, tc.maxFiles)
			if err != nil {
				t.Fatal(err)
			}
			var in strings.Builder
			for i := range 1000 {
				fmt.Fprintf(&in, "line %d\n", i)
			}
			if err := Copy(l, Stdout, strings.NewReader(in.String()), nil); err != nil {
				t.Fatal(err)
			}
			l.Close()
			files := Files(path)
			if len(files) != tc.maxFiles {
				t.Fatalf("files = %v, want %d", files, tc.maxFiles)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != tc.maxFiles {
				t.Errorf("dir holds %d files, want %d", len(entries), tc.maxFiles)
			}
			for _, f := range files {
				fi, _ := os.Stat(f)
				if fi.Size() > maxSize {
					t.Errorf("%s: %d bytes, over %d", f, fi.Size(), maxSize)
				}
			}
			// The files kept hold a run of consecutive lines ending with
			// the last: nothing lost or repeated at a rotation.
			recs := readAll(t, path)
			first := 1000 - len(recs)
			for i, r := range recs {
				if want := fmt.Sprintf("line %d", first+i); string(r.Content) != want {
					t.Fatalf("record %d = %q, want %q", i, r.Content, want)
				}
			}
			if len(recs) < (tc.maxFiles-1)*(maxSize/64) {
				t.Errorf("%d records kept in %d files, fewer than the full ones hold", len(recs), tc.maxFiles)
			}
		})
	}
}

func TestScannerFollowsGrowth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewScanner(f)
	line := string(AppendRecord(nil, Record{Time: time.Now(), Stream: Stdout, Content: []byte("hello")}))
	w.WriteString(line[:10])
	if _, ok, err := s.Next(); ok || err != nil {
		t.Fatalf("Next on a part line = %v, %v; want nothing yet", ok, err)
	}
	w.WriteString(line[10:] + "garbage\n" + line)
	for range 2 {
		r, ok, err := s.Next()
		if !ok || err != nil || string(r.Content) != "hello" {
			t.Fatalf("Next = %+v, %v, %v; want hello", r, ok, err)
		}
	}
	if _, ok, _ := s.Next(); ok {
		t.Fatal("Next past the end gave a record")
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("2016-10-06T00:17:09.669794202Z stdout F the line"))
	f.Add([]byte("2016-10-06T00:17:09.669794202Z stderr P "))
	f.Add([]byte("2016-10-06T00:17:09Z stdout P:a:b x"))
	f.Add([]byte("2016-10-06T00:17:09.669794202+02:00 stdout F"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseRecord(line)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if r.Stream != Stdout && r.Stream != Stderr {
			t.Fatalf("stream %q", r.Stream)
		}
		if bytes.IndexByte(r.Content, '\n') >= 0 {
			return // a record cannot hold one; what a parser does with it is moot
		}
		// What parses writes back to a line that parses the same.
		again, err := ParseRecord(bytes.TrimSuffix(AppendRecord(nil, r), []byte("\n")))
		if err != nil || !again.Time.Equal(r.Time) || again.Stream != r.Stream || again.Partial != r.Partial ||
			!bytes.Equal(again.Content, r.Content) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", line, again, err, r)
		}
	})
}
