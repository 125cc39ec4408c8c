package diff

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Compression is a layer's compression.
type Compression int

const (
	// Auto detects the compression from the stream's first bytes.
	Auto Compression = iota
	Uncompressed
	Gzip
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "auto"
}

// Magic numbers of the compressions detect knows.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte("BZh")
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// detect names the compression of the stream br starts with. Anything not
// compressed is taken as a tar; the tar reader judges it.
func detect(br *bufio.Reader) (Compression, error) {
	head, err := br.Peek(len(magicXz))
	if err != nil && err != io.EOF {
		return Auto, err
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case bytes.HasPrefix(head, magicBzip2), bytes.HasPrefix(head, magicXz):
		return Auto, fmt.Errorf("layer compression (bzip2 or xz): %w", errdefs.ErrNotImplemented)
	}
	return Uncompressed, nil
}

// compressionOf maps an OCI or Docker layer media type to its compression.
func compressionOf(mediaType string) (Compression, error) {
	mt, _, _ := strings.Cut(mediaType, ";")
	switch strings.TrimSpace(mt) {
	case "application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.docker.image.rootfs.diff.tar":
		return Uncompressed, nil
	case "application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return Gzip, nil
	case "application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
		"application/vnd.docker.image.rootfs.diff.tar.zstd":
		return Zstd, nil
	}
	return Auto, fmt.Errorf("layer media type %q: %w", mediaType, errdefs.ErrInvalidArgument)
}

// maxZstdWindow bounds the window a zstd layer may ask the decoder to
// hold: 128 MiB is what `zstd --long=27` writes, the most builders use; a
// frame asking more is refused (ErrTooLarge) rather than allocated.
const maxZstdWindow = 128 << 20

// newDecompressor returns the uncompressed stream of br.
func newDecompressor(comp Compression, br *bufio.Reader) (io.ReadCloser, error) {
	switch comp {
	case Uncompressed:
		return io.NopCloser(br), nil
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("layer compression %d: %w", comp, errdefs.ErrInvalidArgument)
}

// Sizes of the blocks the decompressing goroutine hands to the applying one.
const (
	blockSize   = 256 << 10
	blocksAhead = 16
)

// stream is the uncompressed layer, decompressed and hashed in a goroutine
// of its own a few blocks ahead of its reader.
type stream struct {
	full chan []byte
	free chan []byte
	quit chan struct{}
	done chan struct{}
	once sync.Once

	// max, when > 0, bounds the uncompressed bytes (ErrTooLarge past it).
	max int64

	// Set by the goroutine before it closes full.
	h    hash.Hash
	n    int64
	fail error

	cur   []byte // unread part of the current block
	back  []byte // the current block, to hand back
	ended bool   // Read saw full closed, so fail is set
}

func newStream(ctx context.Context, dec io.ReadCloser, maxSize int64) *stream {
	s := &stream{
		max:  maxSize,
		full: make(chan []byte, blocksAhead),
		free: make(chan []byte, blocksAhead+1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
		h:    sha256.New(),
	}
	for range blocksAhead + 1 {
		s.free <- make([]byte, blockSize)
	}
	go s.fill(ctx, dec)
	return s
}

// fill decompresses into free blocks until the stream ends or fails.
func (s *stream) fill(ctx context.Context, dec io.ReadCloser) {
	defer close(s.done)
	defer dec.Close()
	defer close(s.full)
	for {
		var b []byte
		select {
		case b = <-s.free:
		case <-s.quit:
			return
		case <-ctx.Done():
			s.fail = ctx.Err()
			return
		}
		b = b[:cap(b)]
		n, err := 0, error(nil)
		for n < len(b) && err == nil {
			var m int
			m, err = dec.Read(b[n:])
			n += m
		}
		if s.max > 0 && s.n+int64(n) > s.max {
			// Nothing past the limit reaches the applier.
			s.fail = fmt.Errorf("more than %d bytes uncompressed: %w", s.max, ErrTooLarge)
			return
		}
		if n > 0 {
			s.h.Write(b[:n])
			s.n += int64(n)
			select {
			case s.full <- b[:n]:
			case <-s.quit:
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			s.fail = err
			return
		}
	}
}

// Read reads the uncompressed stream; at its end it returns the
// decompressor's error, or io.EOF.
func (s *stream) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.back != nil {
			s.free <- s.back
			s.back = nil
		}
		b, ok := <-s.full
		if !ok {
			s.ended = true
			if s.fail != nil {
				return 0, s.fail
			}
			return 0, io.EOF
		}
		s.cur, s.back = b, b
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// stop ends the goroutine and waits for it.
func (s *stream) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// err is the decompressor's failure, once Read has reached the end of the
// stream; the caller's ctx reports its own cancellation.
func (s *stream) err() error {
	if !s.ended || errors.Is(s.fail, context.Canceled) || errors.Is(s.fail, context.DeadlineExceeded) {
		return nil
	}
	return s.fail
}

// digest returns the stream's digest and size, once it was read to its end.
func (s *stream) digest() (digest.Digest, int64) {
	<-s.done
	return digest.NewDigest(digest.SHA256, s.h), s.n
}
