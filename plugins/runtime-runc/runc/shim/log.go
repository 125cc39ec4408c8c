package shim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	errdefs "github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/crilog"
)

// The streams, as the CRI log names them.
const (
	stdoutStream = crilog.Stdout
	stderrStream = crilog.Stderr
)

// logCopies copy a process's output into its CRI log, and on to the
// stdio path named beside it. The shim, which outlives the plugin and
// keeld, writes the log for as long as the process (or a child holding
// its stdio) writes.
type logCopies struct {
	file *crilog.File
	wg   sync.WaitGroup
}

func openLog(paths IO) (*logCopies, error) {
	maxFiles := max(paths.LogMaxFiles, 1)
	f, err := crilog.Open(paths.LogPath, paths.LogMaxSize, maxFiles)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	return &logCopies{file: f}, nil
}

// pipe returns the write end the process gets for stream; the shim copies
// its read end.
func (l *logCopies) pipe(stream, to string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	if err := l.copyFrom(stream, r, r, to); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	return w, nil
}

// copyFrom copies r (closing c, when not nil, at its end) as stream into
// the log and to the path to.
func (l *logCopies) copyFrom(stream string, r io.Reader, c io.Closer, to string) error {
	tee, err := openTee(to)
	if err != nil {
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		// A failed log write (a full disk) drops lines, not the process:
		// the copy drains r either way, and nobody is there to tell.
		crilog.Copy(l.file, stream, r, tee)
		if c != nil {
			c.Close()
		}
		if tee != nil {
			tee.Close()
		}
	}()
	return nil
}

// ReopenLog closes the init process's CRI log and opens its path again,
// creating it: the kubelet renamed the file away (its log rotation) and
// what follows goes to a new file at the path (crilog.File.Reopen).
// FailedPrecondition for a task without a log, or whose output has ended
// (the log is closed once the process and its children stopped writing).
// Exec'd processes have no log of their own.
func (s *Service) ReopenLog(_ Empty, _ *Empty) error {
	s.mu.Lock()
	p, err := s.proc("")
	s.mu.Unlock()
	if err != nil {
		return wireError(err)
	}
	if p.io.log == nil {
		return wireError(fmt.Errorf("task %q has no log file: %w", s.cfg.ID, errdefs.ErrFailedPrecondition))
	}
	err = p.io.log.file.Reopen()
	if errors.Is(err, os.ErrClosed) {
		err = fmt.Errorf("task %q: its output has ended, the log is closed: %w", s.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	return wireError(err)
}

// wait closes the log once every copy has ended, then done.
func (l *logCopies) wait(done chan struct{}) {
	l.wg.Wait()
	l.file.Close()
	close(done)
}

// abandon closes the log once the copies started, if any, have ended (a
// process that never ran).
func (l *logCopies) abandon() {
	go func() {
		l.wg.Wait()
		l.file.Close()
	}()
}

// openTee opens where output goes beside the log: a FIFO only while a
// reader has it open, for writing alone (a reader that goes away ends the
// tee, not the log, as the write fails with EPIPE); a file for appending;
// nothing for "".
func openTee(path string) (*os.File, error) {
	switch {
	case path == "":
		return nil, nil
	case isFIFO(path):
		f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if errors.Is(err, unix.ENXIO) {
			return nil, nil // no reader: the log alone
		}
		return f, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}
