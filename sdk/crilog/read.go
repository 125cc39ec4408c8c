package crilog

import (
	"bufio"
	"errors"
	"io"
	"os"
)

// maxLine bounds a record line a Scanner reads: MaxRecord of content and
// room for the time, stream and tag (other writers' longer lines are
// skipped as malformed).
const maxLine = MaxRecord + 256

// Scanner reads records from a log file as it grows: at the end of what
// is written it reports no record (ok false) and keeps a part line
// written so far, to read the rest on the next call.
type Scanner struct {
	br   *bufio.Reader
	line []byte // a line read in part
	skip bool   // the line read in part is too long: dropped to its end
}

// NewScanner reads records from r.
func NewScanner(r io.Reader) *Scanner { return &Scanner{br: bufio.NewReaderSize(r, 64<<10)} }

// Next returns the next record. ok is false at the end of what r gave so
// far (err nil) or on r's error; a malformed line is skipped. The
// record's Content is valid until the next call.
func (s *Scanner) Next() (rec Record, ok bool, err error) {
	for {
		chunk, err := s.br.ReadSlice('\n')
		if len(chunk) > 0 && !s.skip {
			s.line = append(s.line, chunk...)
			if len(s.line) > maxLine {
				s.line, s.skip = s.line[:0], true
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return Record{}, false, nil
		default:
			return Record{}, false, err
		}
		line := s.line
		s.line = s.line[:0]
		if s.skip {
			s.skip = false
			continue
		}
		r, perr := ParseRecord(line[:len(line)-1])
		if perr != nil {
			continue
		}
		// The next append reuses s.line: hand out a copy.
		r.Content = append([]byte(nil), r.Content...)
		return r, true, nil
	}
}

// ReadAll returns the records of the log at path, across its rotated
// files, oldest first.
func ReadAll(path string) ([]Record, error) {
	var out []Record
	for _, p := range Files(path) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		s := NewScanner(f)
		for {
			r, ok, err := s.Next()
			if err != nil {
				f.Close()
				return nil, err
			}
			if !ok {
				break
			}
			out = append(out, r)
		}
		f.Close()
	}
	return out, nil
}
