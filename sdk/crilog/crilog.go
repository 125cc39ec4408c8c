// Package crilog writes and reads container logs in the CRI log format,
// the one kubelet reads from a container's log_path:
//
//	2016-10-06T00:17:09.669794202Z stdout F a whole line
//	2016-10-06T00:17:09.669794202Z stderr P the first part of a long line
//
// Each record is a time (RFC 3339, nanoseconds), the stream, a tag (F: the
// record ends a line; P: a part, the line goes on in the next record of the
// same stream) and the content, without its newline. A line longer than
// MaxRecord, or output that ends without a newline, is written as partial
// records, so reading the records back gives the output byte for byte.
//
// A File is a log with size-based rotation (log, log.1, … as Docker's
// json-file driver keeps them); Files lists a rotated log's files, oldest
// first. The package links nothing but the standard library: a runtime's
// shim writes logs with it.
package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// The streams.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// The tags.
const (
	TagFull    = 'F'
	TagPartial = 'P'
)

// MaxRecord is the most content one record carries (containerd's and
// kubelet's default); a longer line is cut into partial records.
const MaxRecord = 16 << 10

// timeLayout is RFC 3339 with nanoseconds, always nine digits, so records
// sort as text and have one width.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Record is one line of a log file.
type Record struct {
	Time    time.Time
	Stream  string
	Partial bool
	Content []byte
}

// ErrMalformed classes a line that is not a CRI log record.
var ErrMalformed = errors.New("malformed cri log record")

// AppendRecord appends r as a line, newline included.
func AppendRecord(dst []byte, r Record) []byte {
	dst = r.Time.UTC().AppendFormat(dst, timeLayout)
	dst = append(dst, ' ')
	dst = append(dst, r.Stream...)
	dst = append(dst, ' ')
	if r.Partial {
		dst = append(dst, TagPartial)
	} else {
		dst = append(dst, TagFull)
	}
	dst = append(dst, ' ')
	dst = append(dst, r.Content...)
	return append(dst, '\n')
}

// ParseRecord parses one line (without its newline). Content aliases
// line. Errors are ErrMalformed.
func ParseRecord(line []byte) (Record, error) {
	var r Record
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return r, fmt.Errorf("%w: no stream", ErrMalformed)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return r, fmt.Errorf("%w: time %q", ErrMalformed, ts)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return r, fmt.Errorf("%w: no tag", ErrMalformed)
	}
	switch string(stream) {
	case Stdout:
		r.Stream = Stdout
	case Stderr:
		r.Stream = Stderr
	default:
		return r, fmt.Errorf("%w: stream %q", ErrMalformed, stream)
	}
	// The tag may be followed by more ':'-separated fields (the CRI spec
	// leaves room for them); only its first is defined.
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		// An empty full line may be written without the space after the tag.
		tag, content = rest, nil
	}
	tag, _, _ = bytes.Cut(tag, []byte{':'})
	switch string(tag) {
	case string(TagFull):
	case string(TagPartial):
		r.Partial = true
	default:
		return r, fmt.Errorf("%w: tag %q", ErrMalformed, tag)
	}
	r.Time, r.Content = t, content
	return r, nil
}
