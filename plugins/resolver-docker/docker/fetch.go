package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Fetch implements resolver.Resolver.
func (r *Resolver) Fetch(ctx context.Context, s string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	return r.fetch(ctx, s, desc, offset, true)
}

// FetchToFile implements resolver.FileFetcher. The bytes go into the file
// unhashed: the content store that commits it checks the digest, so each
// byte is hashed once.
func (r *Resolver) FetchToFile(ctx context.Context, s string, desc ocispec.Descriptor, offset int64, path string, progress func(int64) error) error {
	f, err := openFetchFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, err := r.fetch(ctx, s, desc, offset, false)
	if err != nil {
		return err
	}
	defer rc.Close()
	// Each Read's bytes are written at once: a stalled registry leaves in
	// the file all that came.
	buf := r.getPart()
	defer r.putPart(buf)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := f.WriteAt(buf[:n], offset); werr != nil {
				return fmt.Errorf("fetch %s into %s: %w", desc.Digest, path, werr)
			}
			offset += int64(n)
			if perr := progress(offset); perr != nil {
				return perr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// openFetchFile opens the file FetchToFile writes: one that exists, is no
// symbolic link, and is a regular file with one link.
func openFetchFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("fetch into %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || fi.Sys().(*syscall.Stat_t).Nlink != 1) {
		err = errors.New("not a regular file with one link")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fetch into %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

// fetch fetches desc; verify checks a blob's digest as it comes (when read
// from its start).
func (r *Resolver) fetch(ctx context.Context, s string, desc ocispec.Descriptor, offset int64, verify bool) (io.ReadCloser, error) {
	rf, err := parseRef(s)
	if err != nil {
		return nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("fetch %s: descriptor digest %q: %v: %w", rf, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if offset < 0 || offset > desc.Size {
		return nil, fmt.Errorf("fetch %s from %s: offset %d outside [0, %d]: %w", desc.Digest, rf, offset, desc.Size, errdefs.ErrInvalidArgument)
	}
	hosts, _, err := r.hostsFor(rf.registry)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, h := range hosts {
		rc, err := r.fetchOn(ctx, h, rf, desc, offset, verify)
		if err == nil {
			return rc, nil
		}
		// A lying host is not papered over by another.
		if errdefs.IsDataLoss(err) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	err = errs[len(errs)-1]
	if len(errs) > 1 {
		err = fmt.Errorf("%w (also tried: %v)", err, errors.Join(errs[:len(errs)-1]...))
	}
	return nil, err
}

func (r *Resolver) fetchOn(ctx context.Context, h *host, rf ref, desc ocispec.Descriptor, offset int64, verify bool) (io.ReadCloser, error) {
	if isManifest(desc.MediaType) || desc.Size <= 0 && desc.MediaType == "" {
		if desc.Size > r.cfg.maxManifest {
			return nil, r.tooLarge(h, rf, desc.Size)
		}
		data, _, err := r.getManifest(ctx, h, rf, desc.Digest.String(), desc.MediaType)
		if err != nil {
			return nil, err
		}
		if got := digest.FromBytes(data); got != desc.Digest || int64(len(data)) != desc.Size {
			return nil, fmt.Errorf("%s: %s: manifest %s: got %d bytes of digest %s, want %d: %w", h.base(), rf, desc.Digest, len(data), got, desc.Size, errdefs.ErrDataLoss)
		}
		return io.NopCloser(bytes.NewReader(data[offset:])), nil
	}
	if offset == desc.Size {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	f := &blobFetch{r: r, h: h, rf: rf, desc: desc, verify: verify}
	r.mu.Lock()
	ranges := !r.noRanges[h.host]
	r.mu.Unlock()
	if ranges && r.cfg.parallel > 1 && desc.Size-offset >= 2*r.cfg.partSize {
		rc, err := f.parallel(ctx, offset)
		if !errors.Is(err, errNoRanges) {
			return rc, err
		}
		r.logger.Info("registry answers range requests badly: fetching in one stream", "host", h.base())
		r.mu.Lock()
		r.noRanges[h.host] = true
		r.mu.Unlock()
	}
	return f.stream(ctx, offset)
}

// errNoRanges says a registry ignored a Range header.
var errNoRanges = errors.New("registry ignored the range")

// blobFetch reads one blob from one host.
type blobFetch struct {
	r      *Resolver
	h      *host
	rf     ref
	desc   ocispec.Descriptor
	verify bool // hash the bytes and check them at the end
}

// get opens [start, end) of the blob (end 0: to the end). When the
// registry answers 200 to a range, exact says whether that is an error
// (errNoRanges) or the body is skipped up to start.
func (f *blobFetch) get(ctx context.Context, start, end int64, exact bool) (io.ReadCloser, error) {
	u := f.h.url(f.rf.repo, "blobs/"+f.desc.Digest.String())
	resp, err := f.r.do(ctx, f.h, f.rf, http.MethodGet, u, []string{"repository:" + f.rf.repo + ":pull"}, nil, func(req *http.Request) {
		switch {
		case end > 0:
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, end-1))
		case start > 0:
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", start))
		}
	})
	if err != nil {
		return nil, err
	}
	if end == 0 {
		end = f.desc.Size
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if got := contentRangeStart(resp.Header.Get("Content-Range")); got != start {
			resp.Body.Close()
			if exact {
				return nil, errNoRanges
			}
			return nil, fmt.Errorf("%s: %s: blob %s: asked from byte %d, got a range from %d: %w", f.h.base(), f.rf, f.desc.Digest, start, got, errdefs.ErrUnavailable)
		}
	default:
		if start > 0 || end < f.desc.Size {
			if exact {
				resp.Body.Close()
				return nil, errNoRanges
			}
			if _, err := io.CopyN(io.Discard, resp.Body, start); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("%s: %s: blob %s: skip to %d: %v: %w", f.h.base(), f.rf, f.desc.Digest, start, err, errdefs.ErrUnavailable)
			}
			resp.ContentLength -= start
		}
	}
	if resp.ContentLength >= 0 && resp.ContentLength != end-start && !(resp.StatusCode == http.StatusOK && end < f.desc.Size) {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s: blob %s: Content-Length %d, want %d of its %d bytes: %w", f.h.base(), f.rf, f.desc.Digest, resp.ContentLength, end-start, f.desc.Size, errdefs.ErrDataLoss)
	}
	return resp.Body, nil
}

func contentRangeStart(v string) int64 {
	v = strings.TrimPrefix(strings.TrimSpace(v), "bytes ")
	s, _, _ := strings.Cut(v, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// readRange reads [start, end) into buf, resuming after a failed or
// stalled request, up to the retry count.
func (f *blobFetch) readRange(ctx context.Context, start, end int64, buf []byte, exact bool) error {
	got := int64(0)
	var lastErr error
	for attempt := 0; attempt <= f.r.cfg.retries; attempt++ {
		rc, err := f.get(ctx, start+got, end, exact)
		if err != nil {
			return err
		}
		n, err := stallRead(ctx, rc, buf[got:end-start], f.r.cfg.stall)
		rc.Close()
		got += int64(n)
		if got == end-start {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
		f.r.logger.Debug("range read failed, resuming", "host", f.h.base(), "digest", f.desc.Digest, "at", start+got, "error", err)
	}
	return fmt.Errorf("%s: %s: blob %s at byte %d: %v: %w", f.h.base(), f.rf, f.desc.Digest, start+got, lastErr, errdefs.ErrUnavailable)
}

// stallRead fills buf from rc; it gives up when no byte arrives for stall.
func stallRead(ctx context.Context, rc io.ReadCloser, buf []byte, stall time.Duration) (int, error) {
	n := 0
	progress := make(chan struct{}, 1)
	done := make(chan struct{})
	stalled := false
	var mu sync.Mutex
	go func() {
		t := time.NewTimer(stall)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-progress:
				t.Reset(stall)
			case <-t.C:
				mu.Lock()
				stalled = true
				mu.Unlock()
				rc.Close()
				return
			case <-ctx.Done():
				rc.Close()
				return
			}
		}
	}()
	defer close(done)
	for n < len(buf) {
		m, err := rc.Read(buf[n:])
		n += m
		if m > 0 {
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		if err != nil {
			mu.Lock()
			if stalled {
				err = fmt.Errorf("no progress for %s", stall)
			}
			mu.Unlock()
			if errors.Is(err, io.EOF) && n < len(buf) {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	return n, nil
}

// streamChunk is how much one streamed read step asks for.
const streamChunk = 1 << 20

// stream reads the blob from offset in one request, resuming it from where
// it broke.
func (f *blobFetch) stream(ctx context.Context, offset int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	rc, err := f.get(ctx, offset, 0, false)
	if err != nil {
		cancel()
		return nil, err
	}
	// One buffer serves every step: the verifier hands a chunk out whole
	// before it asks for the next.
	chunk := make([]byte, min(streamChunk, f.desc.Size-offset))
	return &verifier{f: f, next: func() ([]byte, error) {
		buf := chunk[:min(int64(len(chunk)), f.desc.Size-offset)]
		if len(buf) == 0 {
			return nil, io.EOF
		}
		var lastErr error
		for attempt := 0; attempt <= f.r.cfg.retries; attempt++ {
			if rc == nil {
				if rc, err = f.get(ctx, offset, 0, false); err != nil {
					return nil, err
				}
			}
			n, err := stallRead(ctx, rc, buf, f.r.cfg.stall)
			offset += int64(n)
			if n == len(buf) {
				return buf, nil
			}
			rc.Close()
			rc = nil
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if n > 0 {
				// Hand over what came; the rest resumes at the next call.
				return buf[:n], nil
			}
			lastErr = err
		}
		return nil, fmt.Errorf("%s: %s: blob %s at byte %d: %v: %w", f.h.base(), f.rf, f.desc.Digest, offset, lastErr, errdefs.ErrUnavailable)
	}, close: func() {
		cancel()
		if rc != nil {
			rc.Close()
		}
	}, hash: f.hasherFrom(offset)}, nil
}

// hasherFrom verifies only reads from the start: the bytes before offset
// are not seen here.
func (f *blobFetch) hasherFrom(offset int64) hash.Hash {
	d := f.desc.Digest
	if !f.verify || offset != 0 || !d.Algorithm().Available() {
		return nil
	}
	return d.Algorithm().Hash()
}

// parallel reads the blob from offset in part-sized ranges, cfg.parallel
// at a time, handing them over in order. At most parallel parts are held.
func (f *blobFetch) parallel(ctx context.Context, offset int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	part := f.r.cfg.partSize
	n := int((f.desc.Size - offset + part - 1) / part)
	type result struct {
		buf []byte
		err error
	}
	// A part starts only when a slot frees, which is once the part
	// `parallel` before it was handed over: a ring of that many results
	// serves every part, whatever size the descriptor claims.
	results := make([]chan result, f.r.cfg.parallel)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	slot := func(i int) chan result { return results[i%len(results)] }
	slots := make(chan struct{}, f.r.cfg.parallel)
	// Part buffers come from the resolver's pool, shared by every fetch, and
	// go back to it as they are handed over (or dropped with a failed part).
	getBuf := f.r.getPart
	putBuf := f.r.putPart

	// The first part is read here, so that a registry ignoring ranges is
	// found before anything is handed over.
	first := getBuf()
	end := min(offset+part, f.desc.Size)
	if err := f.readRange(ctx, offset, end, first, true); err != nil {
		cancel()
		return nil, err
	}
	slot(0) <- result{buf: first[:end-offset]}
	slots <- struct{}{}

	go func() {
		for i := 1; i < n; i++ {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func(i int) {
				start := offset + int64(i)*part
				end := min(start+part, f.desc.Size)
				buf := getBuf()
				err := f.readRange(ctx, start, end, buf, false)
				slot(i) <- result{buf: buf[:end-start], err: err}
			}(i)
		}
	}()
	i := 0
	var held []byte
	return &verifier{f: f, next: func() ([]byte, error) {
		if held != nil {
			putBuf(held)
			held = nil
			<-slots
		}
		if i == n {
			return nil, io.EOF
		}
		select {
		case res := <-slot(i):
			if res.err != nil {
				return nil, res.err
			}
			i++
			held = res.buf
			return res.buf, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, close: cancel, hash: f.hasherFrom(offset)}, nil
}

// verifier hands out the chunks next returns and, when the blob was read
// from its start, checks its digest at the end: a registry serving other
// bytes fails the last Read with DataLoss.
type verifier struct {
	f     *blobFetch
	next  func() ([]byte, error)
	close func()
	hash  hash.Hash
	buf   []byte
	err   error
	once  sync.Once
}

func (v *verifier) Read(p []byte) (int, error) {
	for len(v.buf) == 0 {
		if v.err != nil {
			return 0, v.err
		}
		b, err := v.next()
		if v.hash != nil && len(b) > 0 {
			v.hash.Write(b)
		}
		v.buf = b
		if err != nil {
			if errors.Is(err, io.EOF) && v.hash != nil {
				if got := digest.NewDigest(v.f.desc.Digest.Algorithm(), v.hash); got != v.f.desc.Digest {
					err = fmt.Errorf("%s: %s: blob %s: the registry sent bytes of digest %s: %w", v.f.h.base(), v.f.rf, v.f.desc.Digest, got, errdefs.ErrDataLoss)
				}
			}
			v.err = err
		}
	}
	n := copy(p, v.buf)
	v.buf = v.buf[n:]
	return n, nil
}

func (v *verifier) Close() error {
	v.once.Do(v.close)
	return nil
}
