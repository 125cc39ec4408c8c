package cio

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStdinLateReader: a runtime that opens the stdin FIFO only after the
// start (as with a terminal, once it has the console) still reads all the
// caller wrote, then EOF.
func TestStdinLateReader(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		f, err := newFIFOs("late", Streams{Stdin: strings.NewReader("typed line\n"), Terminal: terminal})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		f.Started()
		// A writer that did not wait for its reader would be gone by
		// now; the pass does not hang on the pause's length.
		time.Sleep(100 * time.Millisecond)
		// Opened after the start; blocking: a writer that had gone would
		// leave it waiting (and the line lost).
		r, err := os.OpenFile(f.Config().Stdin, os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != "typed line\n" {
			t.Errorf("terminal %v: read %q, %v; want the line, then EOF", terminal, got, err)
		}
	}
}
