package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/namespaces"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/crilog"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// Containers' logs. A task created with a TaskIO.log without a path gets
// the container's log, <root>/logs/<namespace>/<id>/container.log, which
// the runtime's shim writes (CRI format, rotated) and keeld serves
// (Logs.Read) until the container is deleted.

// containerLogName is the log's file in its container's log dir.
const containerLogName = "container.log"

// followPoll is how often a follower looks for new records and for a
// rotation. Polling, not inotify: every follower (keel logs -f, attach,
// later kubelet's) would hold an inotify instance, of which a user has
// 128 by default, and a stat and a read every 100ms cost next to nothing.
const followPoll = 100 * time.Millisecond

// containerLogDir is where container id's log lives.
func (s *Server) containerLogDir(ctx context.Context, id string) (string, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.cfg.Root, "logs", ns, id), nil
}

// removeContainerLog removes container id's log, with the container.
func (s *Server) removeContainerLog(ctx context.Context, id string) error {
	dir, err := s.containerLogDir(ctx, id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("container %q: remove its log: %w", id, err)
	}
	os.Remove(filepath.Dir(dir)) // the namespace's dir, once empty
	return nil
}

// taskIO is the runtime's IO for a task of c: a stdin keeld keeps when
// asked (stdin.go); with a log asked for, its path (the container's own
// for none given) and rotation (keeld's defaults for none given).
// FailedPrecondition when c's runtime does not write logs.
func (s *Server) taskIO(ctx context.Context, c metadata.Container, in *keelv1.TaskIO) (runtime.IO, error) {
	io := ioFromProto(in)
	if err := s.withKeptStdin(ctx, c.ID, in, &io); err != nil {
		return io, err
	}
	l := in.GetLog()
	if l == nil {
		return io, nil
	}
	if err := s.runtimeWritesLogs(c.Runtime); err != nil {
		return io, fmt.Errorf("container %q: %w", c.ID, err)
	}
	if l.MaxSize < 0 || l.MaxFiles < 0 {
		return io, fmt.Errorf("container %q: log max size %d, max files %d: %w", c.ID, l.MaxSize, l.MaxFiles, errdefs.ErrInvalidArgument)
	}
	io.LogMaxSize, io.LogMaxFiles = l.MaxSize, int(l.MaxFiles)
	if io.LogMaxSize == 0 {
		io.LogMaxSize = s.cfg.ContainerLogs.MaxSize
	}
	if io.LogMaxFiles == 0 {
		io.LogMaxFiles = s.cfg.ContainerLogs.MaxFiles
	}
	if l.Path != "" {
		if !filepath.IsAbs(l.Path) {
			return io, fmt.Errorf("container %q: log path %q is not absolute: %w", c.ID, l.Path, errdefs.ErrInvalidArgument)
		}
		io.LogPath = filepath.Clean(l.Path)
		return io, nil
	}
	dir, err := s.containerLogDir(ctx, c.ID)
	if err != nil {
		return io, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return io, fmt.Errorf("container %q: log dir: %w", c.ID, err)
	}
	io.LogPath = filepath.Join(dir, containerLogName)
	return io, nil
}

// taskLogToProto reports the log a runtime writes, if any.
func taskLogToProto(io runtime.IO) *keelv1.TaskLog {
	if io.LogPath == "" {
		return nil
	}
	return &keelv1.TaskLog{Path: io.LogPath, MaxSize: io.LogMaxSize, MaxFiles: int32(io.LogMaxFiles)}
}

// runtimeWritesLogs fails when the runtime plugin name is known not to
// announce runtime.CapabilityCRILog (one not started yet is checked after
// its create, by checkLogKept).
func (s *Server) runtimeWritesLogs(name string) error {
	if s.knownWithout(sdk.KindRuntime, name, runtime.CapabilityCRILog) {
		return fmt.Errorf("runtime %q does not write container logs (no %s capability): start the task with --log FILE or none: %w",
			name, runtime.CapabilityCRILog, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// checkLogKept checks, after a create that asked for a log, that the
// runtime took it: one older than logs ignores the field. Such a task is
// deleted again (it never ran) and the create fails.
func (s *Server) checkLogKept(ctx context.Context, rt runtime.Runtime, name, tid string, io runtime.IO) error {
	if io.LogPath == "" {
		return nil
	}
	st, err := rt.State(ctx, tid, "")
	if err != nil || st.IO.LogPath != "" {
		return nil
	}
	rt.Delete(ctx, tid, "")
	return fmt.Errorf("runtime %q does not write container logs (it ignored the log): start the task with --log FILE or none: %w",
		name, errdefs.ErrFailedPrecondition)
}

type logsService struct {
	keelv1.UnimplementedLogsServer
	s *Server
}

// logBatch bounds the records of one message.
const (
	logBatchRecords = 512
	logBatchBytes   = 1 << 20
)

// logSender batches records into messages.
type logSender struct {
	stream grpc.ServerStreamingServer[keelv1.LogRecords]
	batch  []*keelv1.LogRecord
	size   int
}

func (ls *logSender) add(r crilog.Record) error {
	stream := keelv1.LogStream_LOG_STREAM_STDOUT
	if r.Stream == crilog.Stderr {
		stream = keelv1.LogStream_LOG_STREAM_STDERR
	}
	ls.batch = append(ls.batch, &keelv1.LogRecord{Time: timestamppb.New(r.Time), Stream: stream, Partial: r.Partial, Content: r.Content})
	ls.size += len(r.Content)
	if len(ls.batch) >= logBatchRecords || ls.size >= logBatchBytes {
		return ls.flush()
	}
	return nil
}

func (ls *logSender) flush() error {
	if len(ls.batch) == 0 {
		return nil
	}
	err := ls.stream.Send(&keelv1.LogRecords{Records: ls.batch})
	ls.batch, ls.size = nil, 0
	return err
}

// lineFilter drops the records of lines begun before since: a line's
// records (partial ones, then a full one, of one stream) go together.
type lineFilter struct {
	since time.Time
	// keep is the decision for each stream's line under way, if any.
	keep map[string]*bool
}

func (f *lineFilter) pass(r crilog.Record) bool {
	if f.since.IsZero() {
		return true
	}
	k := f.keep[r.Stream]
	if k == nil {
		k = new(bool)
		*k = !r.Time.Before(f.since)
		f.keep[r.Stream] = k
	}
	keep := *k
	if !r.Partial {
		delete(f.keep, r.Stream) // the line ends
	}
	return keep
}

// tailLines keeps the records of the last n lines of recs: lines are
// counted where they begin, and a line begun before the last n (a part of
// it may come after another stream's line) goes whole.
func tailLines(recs []crilog.Record, n int64) []crilog.Record {
	// line[i] is where record i's line begins: at a record whose stream's
	// previous record ended a line.
	line := make([]int, len(recs))
	var starts []int
	begun := map[string]int{}
	for i, r := range recs {
		b, mid := begun[r.Stream]
		if !mid {
			b = i
			starts = append(starts, i)
		}
		line[i] = b
		if r.Partial {
			begun[r.Stream] = b
		} else {
			delete(begun, r.Stream)
		}
	}
	if n < 0 || int64(len(starts)) <= n {
		return recs // a negative tail is no tail
	}
	cut := len(recs)
	if n > 0 {
		cut = starts[int64(len(starts))-n]
	}
	var out []crilog.Record
	for i, r := range recs {
		if line[i] >= cut {
			out = append(out, r)
		}
	}
	return out
}

// Read serves a container's log: the records of its files in order, then,
// with follow, those written after, until its task has exited and the
// log is read to its end.
func (ls logsService) Read(req *keelv1.ReadLogsRequest, stream grpc.ServerStreamingServer[keelv1.LogRecords]) error {
	ctx := stream.Context()
	c, err := ls.s.db.Containers().Get(ctx, req.Id)
	if err != nil {
		return err
	}
	path, err := ls.s.servedLogPath(ctx, c)
	if err != nil {
		return err
	}
	files := crilog.Files(path)
	if len(files) == 0 {
		return fmt.Errorf("container %q has no log: its task was not started yet, or with a terminal of the caller's, --log FILE or none: %w",
			c.ID, errdefs.ErrFailedPrecondition)
	}
	// Wait for the task from now: its exit ends a follow.
	var exited <-chan struct{}
	if req.Follow {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		exited = ls.s.taskExited(wctx, c)
	}
	var since time.Time
	if req.Since != nil {
		since = req.Since.AsTime()
	}
	filter := &lineFilter{since: since, keep: map[string]*bool{}}
	out := &logSender{stream: stream}

	// What is written: every file but the last read whole, the last (the
	// live one) to its end, kept open to follow.
	f, err := newLogFollower(path, files)
	if err != nil {
		return err
	}
	defer f.close()
	send := func(r crilog.Record) error {
		if !filter.pass(r) {
			return nil
		}
		return out.add(r)
	}
	// Headers once what is written from then on is sure to reach the
	// caller (attach writes stdin only then): at once, or, when the last
	// lines are held before they go, once they are read.
	if req.Tail == nil {
		if err := stream.SendHeader(nil); err != nil {
			return err
		}
		if err := f.drain(send); err != nil {
			return err
		}
	} else {
		// The last lines are known at the end only: what is written is
		// held (at most the log's max_size × max_files).
		var recs []crilog.Record
		if err := f.drain(func(r crilog.Record) error {
			if filter.pass(r) {
				recs = append(recs, r)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := stream.SendHeader(nil); err != nil {
			return err
		}
		for _, r := range tailLines(recs, *req.Tail) {
			if err := out.add(r); err != nil {
				return err
			}
		}
	}
	if err := out.flush(); err != nil || !req.Follow {
		return err
	}
	// Followed: what is written next, until the task has exited and what
	// it wrote is read (its runtime reports the exit once its output is
	// in the log).
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	done := false
	for {
		if err := f.drain(send); err != nil {
			return err
		}
		if err := out.flush(); err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			done, exited = true, nil
		case <-tick.C:
		}
	}
}

// taskExited is closed once c's task has exited, or when it has none.
func (s *Server) taskExited(ctx context.Context, c metadata.Container) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		rt, err := s.runtime(c.Runtime)
		if err != nil {
			return
		}
		tid, err := taskID(ctx, c.ID)
		if err != nil {
			return
		}
		for ctx.Err() == nil {
			_, err := rt.Wait(ctx, tid, "")
			if err == nil || !errdefs.IsUnavailable(err) {
				return
			}
			// The plugin restarts: ask again.
			select {
			case <-ctx.Done():
			case <-time.After(followPoll):
			}
		}
	}()
	return ch
}

// logFollower reads a rotated log in order while it is written: its
// current file is held open, and read to the end again after it was
// rotated away, before the next file.
type logFollower struct {
	path string
	cur  *os.File
	scan *crilog.Scanner
	// pending are files to read, oldest first, before the live one.
	pending []string
}

func newLogFollower(path string, files []string) (*logFollower, error) {
	f := &logFollower{path: path, pending: files}
	if err := f.next(); err != nil {
		return nil, err
	}
	return f, nil
}

// next opens the next pending file; NotExist ones (rotated out while
// listed) are skipped.
func (f *logFollower) next() error {
	for len(f.pending) > 0 {
		p := f.pending[0]
		f.pending = f.pending[1:]
		file, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		f.close()
		f.cur, f.scan = file, crilog.NewScanner(file)
		return nil
	}
	return nil
}

// drain hands fn every record written so far, across rotations.
func (f *logFollower) drain(fn func(crilog.Record) error) error {
	for {
		if f.cur != nil {
			for {
				r, ok, err := f.scan.Next()
				if err != nil {
					return err
				}
				if !ok {
					break
				}
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		if len(f.pending) > 0 {
			if err := f.next(); err != nil {
				return err
			}
			continue
		}
		// The current file read to its end: is it still the live one?
		moved, err := f.rotated()
		if err != nil || !moved {
			return err
		}
	}
}

// rotated tells whether the live file is another than the one read, and
// if so queues the files after it.
func (f *logFollower) rotated() (bool, error) {
	live, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // mid-rotation, or removed with the container
	}
	if err != nil {
		return false, err
	}
	if f.cur == nil {
		f.pending = []string{f.path}
		return true, nil
	}
	cur, err := f.cur.Stat()
	if err != nil {
		return false, err
	}
	if os.SameFile(cur, live) {
		// Kept in place (max_files 1): a file shorter than what was read
		// of it was started over.
		if off, err := f.cur.Seek(0, io.SeekCurrent); err == nil && live.Size() < off {
			f.cur.Seek(0, io.SeekStart)
			f.scan = crilog.NewScanner(f.cur)
			return true, nil
		}
		return false, nil
	}
	// The writer closed the file read before renaming it: drain reads
	// what remains of it, then the files after it, in order.
	files := crilog.Files(f.path)
	at := -1
	for i, p := range files {
		if fi, err := os.Stat(p); err == nil && os.SameFile(cur, fi) {
			at = i
		}
	}
	f.pending = files[at+1:]
	return true, nil
}

func (f *logFollower) close() {
	if f.cur != nil {
		f.cur.Close()
		f.cur = nil
	}
}
