package client

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client/cio"
)

// LogStream names the stream a log record came from.
type LogStream int

const (
	Stdout LogStream = LogStream(keelv1.LogStream_LOG_STREAM_STDOUT)
	Stderr LogStream = LogStream(keelv1.LogStream_LOG_STREAM_STDERR)
)

func (s LogStream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// LogRecord is one record of a container's log: a line without its
// newline, or with Partial a part of one that goes on in the stream's
// next record.
type LogRecord struct {
	Time    time.Time
	Stream  LogStream
	Partial bool
	Content []byte
}

// LogsOpts choose what Container.Logs reads.
type LogsOpts struct {
	// Follow goes on with the records written after, until the task has
	// exited and its output is read.
	Follow bool
	// Tail, when not negative, starts at the last Tail lines.
	Tail int64
	// Since, when not zero, skips the lines written before it.
	Since time.Time
	// Started, when set, is called once keeld has read what was written:
	// what is written after reaches the caller.
	Started func()
}

// LogsOpt sets LogsOpts.
type LogsOpt func(*LogsOpts)

// WithFollow follows the log until the task has exited.
func WithFollow(o *LogsOpts) { o.Follow = true }

// WithTail starts at the last n lines.
func WithTail(n int64) LogsOpt { return func(o *LogsOpts) { o.Tail = n } }

// WithStarted calls fn once what is written from then on reaches the
// caller.
func WithStarted(fn func()) LogsOpt { return func(o *LogsOpts) { o.Started = fn } }

// WithSince skips the lines written before t.
func WithSince(t time.Time) LogsOpt { return func(o *LogsOpts) { o.Since = t } }

func (c *Client) logs() keelv1.LogsClient { return keelv1.NewLogsClient(c.conn) }

// Logs calls fn with each record of the container's log (its task's
// output, kept by keeld while the container exists), oldest first,
// until the log's end or, with WithFollow, the task's exit. An error of
// fn ends the read and is returned.
//
//	w := client.NewLogWriter(os.Stdout, os.Stderr, false)
//	err := ctr.Logs(ctx, w.Write, client.WithTail(10))
func (ct *Container) Logs(ctx context.Context, fn func(LogRecord) error, opts ...LogsOpt) error {
	o := LogsOpts{Tail: -1}
	for _, f := range opts {
		f(&o)
	}
	req := &keelv1.ReadLogsRequest{Id: ct.info.ID, Follow: o.Follow}
	if o.Tail >= 0 {
		req.Tail = &o.Tail
	}
	if !o.Since.IsZero() {
		req.Since = timestamppb.New(o.Since)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ct.c.logs().Read(ctx, req)
	if err != nil {
		return err
	}
	if o.Started != nil {
		// keeld sends its headers once it has read what was written (or
		// fails, which Recv reports).
		if _, err := stream.Header(); err == nil {
			o.Started()
		}
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range msg.Records {
			rec := LogRecord{Time: r.Time.AsTime(), Stream: LogStream(r.Stream), Partial: r.Partial, Content: r.Content}
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
}

// LogWriter writes log records back as the output they were: each
// stream's lines joined from their parts, stdout's to one writer and
// stderr's to the other, each line after its time (RFC 3339, with
// nanoseconds) with Timestamps.
type LogWriter struct {
	Stdout, Stderr io.Writer
	Timestamps     bool
	// midLine tells, per stream, that a line's first part was written.
	midLine [3]bool
}

// NewLogWriter writes stdout's lines to stdout and stderr's to stderr.
func NewLogWriter(stdout, stderr io.Writer, timestamps bool) *LogWriter {
	return &LogWriter{Stdout: stdout, Stderr: stderr, Timestamps: timestamps}
}

// Write writes one record.
func (w *LogWriter) Write(r LogRecord) error {
	out, i := w.Stdout, 1
	if r.Stream == Stderr {
		out, i = w.Stderr, 2
	}
	buf := make([]byte, 0, len(r.Content)+40)
	if w.Timestamps && !w.midLine[i] {
		buf = r.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, ' ')
	}
	buf = append(buf, r.Content...)
	if !r.Partial {
		buf = append(buf, '\n')
	}
	w.midLine[i] = r.Partial
	_, err := out.Write(buf)
	return err
}

// WriteStdin copies r to the stdin of a task created with
// cio.KeepStdin, until r ends (which leaves the task's stdin open: CloseIO
// closes it) or ctx does.
func (t *Task) WriteStdin(ctx context.Context, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := t.c.tasks().WriteStdin(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, rerr := r.Read(buf)
		if n > 0 || first {
			chunk := &keelv1.StdinChunk{Data: buf[:n]}
			if first {
				chunk.Id, first = t.id, false
			}
			if err := stream.Send(chunk); err != nil {
				// The reason comes with the close.
				_, cerr := stream.CloseAndRecv()
				if cerr != nil {
					return cerr
				}
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			_, err := stream.CloseAndRecv()
			return err
		}
		if rerr != nil {
			return rerr
		}
	}
}

func logToProto(l *cio.Log) *keelv1.TaskLog {
	if l == nil {
		return nil
	}
	return &keelv1.TaskLog{Path: l.Path, MaxSize: l.MaxSize, MaxFiles: int32(l.MaxFiles)}
}

func logFromProto(l *keelv1.TaskLog) *cio.Log {
	if l == nil {
		return nil
	}
	return &cio.Log{Path: l.Path, MaxSize: l.MaxSize, MaxFiles: int(l.MaxFiles)}
}
