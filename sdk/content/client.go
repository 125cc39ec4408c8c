package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	pluginv1 "github.com/keel-runtime/keel/sdk/internal/proto/keel/plugin/v1"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// NewClient returns the Store served on conn. It is how keeld and the CLI
// reach a content plugin or keeld's content API.
func NewClient(conn grpc.ClientConnInterface, opts ...ClientOpt) Store {
	c := &client{c: pluginv1.NewContentClient(conn)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ClientOpt changes a client NewClient makes.
type ClientOpt func(*client)

// WithIngestFiles has the client's writers write an ingest's bytes into the
// file the store names (IngestPather, capability "ingest-path") instead of
// sending them on the stream, for a host on the store's machine. The file
// must lie beneath root, the store's root directory, reached without a
// symbolic link, and be a regular file with one link: a writer the store
// names another file for fails, naming it. A store without the capability
// is written over the stream.
func WithIngestFiles(root string) ClientOpt {
	return func(c *client) { c.ingestRoot = root }
}

// client is a Store reached over gRPC.
type client struct {
	c pluginv1.ContentClient
	// ingestRoot, when set, is where ingest files the store names may be.
	ingestRoot string
}

var _ Store = (*client)(nil)

func (c *client) Info(ctx context.Context, dgst digest.Digest) (Info, error) {
	resp, err := c.c.Info(ctx, &pluginv1.ContentInfoRequest{Digest: dgst.String()})
	if err != nil {
		return Info{}, err
	}
	return infoFromProto(resp), nil
}

func (c *client) Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error) {
	resp, err := c.c.Update(ctx, &pluginv1.UpdateContentRequest{Info: infoToProto(info), FieldPaths: fieldpaths})
	if err != nil {
		return Info{}, err
	}
	return infoFromProto(resp), nil
}

func (c *client) Walk(ctx context.Context, fn WalkFunc, filters ...string) error {
	// The child context ends the stream when fn stops the walk early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.List(ctx, &pluginv1.ListContentRequest{Filters: filters})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, info := range resp.Infos {
			if err := fn(infoFromProto(info)); err != nil {
				return err
			}
		}
	}
}

func (c *client) Delete(ctx context.Context, dgst digest.Digest) error {
	_, err := c.c.Delete(ctx, &pluginv1.ContentInfoRequest{Digest: dgst.String()})
	return err
}

func (c *client) Status(ctx context.Context, ref string) (Status, error) {
	resp, err := c.c.Status(ctx, &pluginv1.IngestRefRequest{Ref: ref})
	if err != nil {
		return Status{}, err
	}
	return statusFromProto(resp), nil
}

func (c *client) ListStatuses(ctx context.Context, filters ...string) ([]Status, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.ListStatuses(ctx, &pluginv1.ListStatusesRequest{Filters: filters})
	if err != nil {
		return nil, err
	}
	var out []Status
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		for _, s := range resp.Statuses {
			out = append(out, statusFromProto(s))
		}
	}
}

func (c *client) Abort(ctx context.Context, ref string) error {
	_, err := c.c.Abort(ctx, &pluginv1.IngestRefRequest{Ref: ref})
	return err
}

// BlobPath asks the store for a committed blob's file; stores without the
// capability answer NotImplemented.
func (c *client) BlobPath(ctx context.Context, dgst digest.Digest) (string, error) {
	resp, err := c.c.BlobPath(ctx, &pluginv1.ContentInfoRequest{Digest: dgst.String()})
	if err != nil {
		return "", err
	}
	return resp.Path, nil
}

// Close does nothing: the connection belongs to whoever made it.
func (c *client) Close() error { return nil }

// ReaderAt asks for the blob's Info first, so a missing blob is NotFound
// here and Size is the stored size, not the descriptor's.
func (c *client) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (ReaderAt, error) {
	info, err := c.Info(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	return &readerAt{ctx: ctx, c: c.c, dgst: desc.Digest, size: info.Size}, nil
}

// readerAt keeps one Read stream open while reads are sequential, so a full
// sequential read costs one stream; a read elsewhere reopens it there.
type readerAt struct {
	ctx  context.Context
	c    pluginv1.ContentClient
	dgst digest.Digest
	size int64

	mu     sync.Mutex
	stream grpc.ServerStreamingClient[pluginv1.ReadContentResponse]
	cancel context.CancelFunc
	pos    int64  // offset of the stream's next byte, buf included
	buf    []byte // what is left of the last message
}

var _ ReaderAt = (*readerAt)(nil)

func (r *readerAt) Size() int64 { return r.size }

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset: %w", r.dgst, errdefs.ErrInvalidArgument)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	if r.stream == nil || off != r.pos {
		r.closeStream()
		ctx, cancel := context.WithCancel(r.ctx)
		stream, err := r.c.Read(ctx, &pluginv1.ReadContentRequest{Digest: r.dgst.String(), Offset: off})
		if err != nil {
			cancel()
			return 0, err
		}
		r.stream, r.cancel, r.pos = stream, cancel, off
	}
	n := 0
	for n < len(p) && r.pos < r.size {
		if len(r.buf) == 0 {
			resp, err := r.stream.Recv()
			if err != nil {
				r.closeStream()
				if errors.Is(err, io.EOF) {
					return n, fmt.Errorf("read %s: stream ended at %d of %d: %w", r.dgst, r.pos, r.size, io.ErrUnexpectedEOF)
				}
				return n, err
			}
			if resp.Offset != r.pos {
				r.closeStream()
				return n, fmt.Errorf("read %s: got offset %d, want %d: %w", r.dgst, resp.Offset, r.pos, errdefs.ErrInternal)
			}
			r.buf = resp.Data
		}
		c := copy(p[n:], r.buf)
		r.buf = r.buf[c:]
		n += c
		r.pos += int64(c)
	}
	if r.pos >= r.size {
		r.closeStream()
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *readerAt) closeStream() {
	if r.cancel != nil {
		r.cancel()
	}
	r.stream, r.cancel, r.buf = nil, nil, nil
}

func (r *readerAt) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeStream()
	return nil
}

// writeWindow is how many Write requests may await their responses: the
// client does not wait a round trip per chunk.
const writeWindow = 32

// fileProbe is how many bytes a writer puts in an ingest file between two
// STATs. Each STAT has the store hash what came (while the next bytes are
// written), and its answer shows the store is still there: a writer whose
// store died stops within two probes.
const fileProbe = 4 << 20

func (c *client) Writer(ctx context.Context, opts ...WriterOpt) (Writer, error) {
	wo, err := ApplyWriterOpts(opts...)
	if err != nil {
		return nil, err
	}
	// The stream lives until Close, which ends it and waits for the
	// store's answer: once Close returned, the store has let go of the
	// ingest (a collection right after finds it free), even when ctx
	// ended first. A cancelled stream would end at once on this side
	// only, so ctx's end cuts the stream only after closeGrace, for a
	// store that does not answer.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopCut := context.AfterFunc(ctx, func() { time.AfterFunc(closeGrace, cancel) })
	stream, err := c.c.Write(sctx)
	if err != nil {
		stopCut()
		cancel()
		return nil, err
	}
	w := &writer{stream: stream, cancel: func() { stopCut(); cancel() }, ref: wo.Ref}
	w.send(&pluginv1.WriteContentRequest{
		Action:   pluginv1.WriteAction_WRITE_ACTION_STAT,
		Ref:      wo.Ref,
		Total:    wo.Desc.Size,
		Expected: wo.Desc.Digest.String(),
		WantPath: c.ingestRoot != "",
	})
	if err := w.flush(); err != nil {
		w.cancel()
		return nil, err
	}
	w.offset = w.status.Offset
	if w.path != "" {
		if w.file, err = openIngestFile(c.ingestRoot, w.path); err != nil {
			w.Close()
			return nil, fmt.Errorf("write %q: %w", wo.Ref, err)
		}
		w.probeAt = w.offset + fileProbe
	}
	return w, nil
}

// closeGrace is how long a writer whose context ended still waits for
// the store to end its stream.
const closeGrace = 30 * time.Second

// writer is an ingest held through one Write stream. With an ingest file
// (WithIngestFiles), bytes go into the file and the stream carries only
// STAT, TRUNCATE and COMMIT.
type writer struct {
	stream grpc.BidiStreamingClient[pluginv1.WriteContentRequest, pluginv1.WriteContentResponse]
	cancel context.CancelFunc
	ref    string

	mu       sync.Mutex
	pending  int   // requests sent whose response is not read yet
	offset   int64 // offset after the requests sent (or the bytes put in file)
	status   Status
	digest   digest.Digest
	digestAt int64    // the offset digest is of
	path     string   // the ingest file the store named
	file     *os.File // the ingest file, open for writing
	probeAt  int64    // offset at which the next probe STAT goes
	err      error    // the stream's end; sticky
	closed   bool
}

var _ Writer = (*writer)(nil)

// send sends req, reading responses once the window is full.
func (w *writer) send(req *pluginv1.WriteContentRequest) error {
	if w.err != nil {
		return w.err
	}
	if err := w.stream.Send(req); err != nil {
		// io.EOF: the server ended the stream; its status is in Recv.
		if !errors.Is(err, io.EOF) {
			w.err = err
			return w.err
		}
		for w.err == nil {
			w.recv()
		}
		return w.err
	}
	w.pending++
	for w.pending >= writeWindow && w.err == nil {
		w.recv()
	}
	return w.err
}

func (w *writer) recv() {
	resp, err := w.stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("write %q: stream ended: %w", w.ref, errdefs.ErrUnavailable)
		}
		w.err = err
		return
	}
	w.pending--
	w.status = Status{
		Ref:       w.ref,
		Offset:    resp.Offset,
		Total:     resp.Total,
		Expected:  w.status.Expected,
		StartedAt: wire.Time(resp.StartedAt),
		UpdatedAt: wire.Time(resp.UpdatedAt),
	}
	if resp.Digest != "" {
		w.digest, w.digestAt = digest.Digest(resp.Digest), resp.Offset
	}
	if resp.Path != "" {
		w.path = resp.Path
	}
}

// flush reads every pending response.
func (w *writer) flush() error {
	for w.pending > 0 && w.err == nil {
		w.recv()
	}
	return w.err
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, fmt.Errorf("write %q: writer closed: %w", w.ref, errdefs.ErrFailedPrecondition)
	}
	if w.file != nil {
		return w.writeFile(p)
	}
	n := 0
	for n < len(p) {
		chunk := p[n:min(len(p), n+sdk.ChunkSize)]
		if err := w.send(&pluginv1.WriteContentRequest{
			Action: pluginv1.WriteAction_WRITE_ACTION_WRITE,
			Offset: w.offset,
			Data:   chunk,
		}); err != nil {
			return n, err
		}
		w.offset += int64(len(chunk))
		n += len(chunk)
	}
	return n, nil
}

// writeFile puts p in the ingest file at the writer's offset, probing the
// store every fileProbe bytes: the last probe's answer is awaited before
// the next one goes, so the store's hashing keeps pace with the writes.
func (w *writer) writeFile(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.file.WriteAt(p, w.offset)
	w.offset += int64(n)
	if err != nil {
		return n, fmt.Errorf("write %q: %s: %w", w.ref, w.path, err)
	}
	return n, w.probe()
}

var _ IngestFile = (*writer)(nil)

// Path names the ingest file the writer puts bytes into; "" when it sends
// them on the stream.
func (w *writer) Path() string {
	if w.file == nil {
		return ""
	}
	return w.path
}

// ReadAt reads back the ingest file.
func (w *writer) ReadAt(p []byte, off int64) (int, error) {
	if w.file == nil {
		return 0, fmt.Errorf("read %q: no ingest file: %w", w.ref, errdefs.ErrFailedPrecondition)
	}
	return w.file.ReadAt(p, off)
}

// Wrote moves the writer to offset, which another process wrote the
// ingest file up to, probing the store as writeFile does.
func (w *writer) Wrote(offset int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file == nil || w.closed {
		return fmt.Errorf("write %q: no ingest file: %w", w.ref, errdefs.ErrFailedPrecondition)
	}
	if offset < w.offset {
		return fmt.Errorf("write %q: wrote to %d, behind %d: %w", w.ref, offset, w.offset, errdefs.ErrInvalidArgument)
	}
	w.offset = offset
	return w.probe()
}

// probe sends a STAT once the writer passed probeAt, after reading the
// answer to the last one.
func (w *writer) probe() error {
	if w.offset < w.probeAt {
		return w.err
	}
	w.probeAt = w.offset + fileProbe
	if err := w.flush(); err != nil {
		return err
	}
	return w.send(&pluginv1.WriteContentRequest{Action: pluginv1.WriteAction_WRITE_ACTION_STAT})
}

// Digest asks the store unless its last answer was for every byte
// written: WRITE answers carry no digest.
func (w *writer) Digest() digest.Digest {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flush() == nil && (w.digest == "" || w.digestAt != w.offset) {
		w.stat()
	}
	return w.digest
}

// stat asks for the ingest's status and waits for it.
func (w *writer) stat() error {
	if err := w.send(&pluginv1.WriteContentRequest{Action: pluginv1.WriteAction_WRITE_ACTION_STAT}); err != nil {
		return err
	}
	return w.flush()
}

func (w *writer) Status() (Status, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.stat(); err != nil {
		return Status{}, err
	}
	return w.status, nil
}

func (w *writer) Truncate(size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.send(&pluginv1.WriteContentRequest{Action: pluginv1.WriteAction_WRITE_ACTION_TRUNCATE, Offset: size}); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	w.offset = w.status.Offset
	w.probeAt = w.offset + fileProbe
	return nil
}

// Commit sends the labels opts set; the server checks size and digest. A
// STAT goes just before, in the same flight, so that Digest answers after
// a failed Commit too (the stream ends with it).
func (w *writer) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...Opt) error {
	info, err := ApplyOpts(opts...)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.send(&pluginv1.WriteContentRequest{Action: pluginv1.WriteAction_WRITE_ACTION_STAT}); err != nil {
		return err
	}
	if err := w.send(&pluginv1.WriteContentRequest{
		Action:   pluginv1.WriteAction_WRITE_ACTION_COMMIT,
		Total:    size,
		Expected: expected.String(),
		Labels:   info.Labels,
	}); err != nil {
		return err
	}
	return w.flush()
}

// Close ends the stream and waits for the server to let go of the ref, so
// a writer opened after Close returns finds it free.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	defer w.cancel()
	if w.file != nil {
		// Before the stream ends: the store takes in the file's bytes
		// when it lets go of the ingest.
		w.file.Close()
	}
	if w.err != nil {
		return nil // already reported by the call that met it
	}
	if err := w.stream.CloseSend(); err != nil {
		return err
	}
	for {
		_, err := w.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
