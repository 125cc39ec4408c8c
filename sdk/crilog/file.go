package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// File is a log file that its writers (one per stream) share. With
// MaxSize, a record that would take the file past it first rotates the
// file: path.N-1 becomes path.N (the oldest, path.MaxFiles-1, is dropped),
// …, path becomes path.1, and a new path is started. Records are never
// split across files, so nothing is lost or written twice at a rotation.
//
// Whoever rotates the file from outside (the kubelet renames a container's
// log away, then calls the CRI's ReopenContainerLog) calls Reopen, which
// starts a new file at path; the File never guesses a rename by itself.
type File struct {
	path     string
	maxSize  int64 // 0: no rotation
	maxFiles int   // files kept, the current one included

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
	now  func() time.Time
}

// Open opens (creating, or appending to) the log at path. maxSize 0 turns
// rotation off; maxFiles counts the current file and is at least 1.
func Open(path string, maxSize int64, maxFiles int) (*File, error) {
	if maxSize < 0 || (maxSize > 0 && maxFiles < 1) {
		return nil, fmt.Errorf("log %s: max size %d, max files %d: want sizes ≥ 0 and at least 1 file", path, maxSize, maxFiles)
	}
	l := &File{path: path, maxSize: maxSize, maxFiles: maxFiles, now: time.Now}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write writes one record of stream, stamped now.
func (l *File) Write(stream string, partial bool, content []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	l.buf = AppendRecord(l.buf[:0], Record{Time: l.now(), Stream: stream, Partial: partial, Content: content})
	if l.maxSize > 0 && l.size > 0 && l.size+int64(len(l.buf)) > l.maxSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	return err
}

// rotate shifts the files by one and starts a new one.
func (l *File) rotate() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	l.f = nil
	if l.maxFiles == 1 {
		// Nothing kept: start over in place.
		if err := os.Truncate(l.path, 0); err != nil {
			return err
		}
	} else {
		os.Remove(RotatedName(l.path, l.maxFiles-1))
		for i := l.maxFiles - 2; i >= 1; i-- {
			if err := os.Rename(RotatedName(l.path, i), RotatedName(l.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := os.Rename(l.path, RotatedName(l.path, 1)); err != nil {
			return err
		}
	}
	return l.open()
}

// Reopen closes the file and opens path again, creating it: once someone
// renamed the file away, what follows goes to a new file at path. It
// holds the writers' lock, so each record is whole in one file or the
// other, and none is lost (a long line's partial records may fall either
// side, as at a rotation). When the open fails, writing goes on to the
// file already open and the error is returned. os.ErrClosed after Close.
func (l *File) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	old := l.f
	if err := l.open(); err != nil {
		return fmt.Errorf("reopen log %s: %w", l.path, err)
	}
	return old.Close()
}

// Close closes the file; writes after it fail.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// RotatedName is the name of the n-th rotated file of path (n ≥ 1).
func RotatedName(path string, n int) string { return path + "." + strconv.Itoa(n) }

// Files lists the log at path and its rotated files that exist, oldest
// first (path.N, …, path.1, path).
func Files(path string) []string {
	var rotated []string
	for n := 1; ; n++ {
		p := RotatedName(path, n)
		if _, err := os.Lstat(p); err != nil {
			break
		}
		rotated = append(rotated, p)
	}
	out := make([]string, 0, len(rotated)+1)
	for i := len(rotated) - 1; i >= 0; i-- {
		out = append(out, rotated[i])
	}
	if _, err := os.Lstat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// Copy writes what r gives to l as records of stream, line by line, until
// r ends, and tees the bytes to tee, when not nil, until a write to it
// fails (a reader that went away: the log goes on). A line longer than
// MaxRecord becomes partial records. So does the end of what a read gave
// that is not a whole line, when the read did not fill the buffer (the
// writer paused there: a prompt, `echo -n`): held back for a newline
// that may never come, it would reach no follower of the log (attach),
// as conmon does for CRI-O. A failed write to the log does not stop the
// copy (the process must not block on a full pipe): Copy returns the
// first such error once r ends, or r's error.
func Copy(l *File, stream string, r io.Reader, tee io.Writer) error {
	buf := make([]byte, MaxRecord)
	var logErr error
	write := func(partial bool, line []byte) {
		if werr := l.Write(stream, partial, line); werr != nil && logErr == nil {
			logErr = werr
		}
	}
	// held is the start of a line at buf's start, cut by a read that
	// filled the buffer: more of it is on its way.
	held := 0
	for {
		n, err := r.Read(buf[held:])
		if n > 0 && tee != nil {
			if _, werr := tee.Write(buf[held : held+n]); werr != nil {
				tee = nil
			}
		}
		data := buf[:held+n]
		full := len(data) == len(buf)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			write(false, data[:i])
			data = data[i+1:]
		}
		held = 0
		switch {
		case len(data) == 0:
		case full && len(data) < len(buf) && err == nil:
			held = copy(buf, data)
		default:
			write(true, data)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return logErr
		default:
			return err
		}
	}
}
