// Package regstub is a registry stub for tests: an httptest server on
// 127.0.0.1 speaking enough of the OCI distribution API for keel's docker
// resolver (the /v2/ ping, HEAD and GET of manifests by tag or digest, GET
// and HEAD of blobs with single Range requests) that serves whatever bytes
// a case needs, honest or not.
//
// The real registry (test/conformance/registry, Debian's docker-registry)
// is the normal case; the stub is for the bytes a real registry refuses to
// serve: a blob whose bytes do not match its digest, a body cut mid-way, a
// slow drip, descriptors claiming huge sizes or unknown media types, more
// layers or platforms than anyone would push.
//
// Build an image from Go values (Tar, Gzip, NewLayer, Image.Build), edit
// its descriptors as the case needs, Push it, then change how single blobs
// are served with Behave:
//
//	s := regstub.Start(t)
//	l := regstub.NewLayer(regstub.Gzip(regstub.Tar(regstub.File("a", data))))
//	img := regstub.Image{Layers: []regstub.Layer{l}}
//	img.EditManifest = func(m *ocispec.Manifest) { m.Layers[0].Size = 1e15 }
//	s.Push("repo", "v1", img.Build())
//	s.Behave(l.Blob.Desc.Digest, regstub.Behaviour{CutAfter: 10})
//	ref := s.Host + "/repo:v1"
//
// The stub speaks plain HTTP: the resolver needs plain_http for s.Host.
// It imports nothing of keel.
package regstub

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TB is the part of testing.TB the stub needs.
type TB interface {
	Helper()
	Cleanup(func())
}

// Blob is content with its descriptor. The descriptor is what manifests
// list; the stub serves Data under Desc.Digest.
type Blob struct {
	Desc ocispec.Descriptor
	Data []byte
}

// NewBlob returns data as a blob of mediaType, its descriptor true.
func NewBlob(mediaType string, data []byte) Blob {
	return Blob{Desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, Data: data}
}

// Behaviour changes how one digest is served. The zero value serves the
// blob as it is.
type Behaviour struct {
	// Body, when set, is served instead of the blob's own bytes (a blob
	// whose bytes do not match its digest); Content-Length follows it.
	Body []byte
	// CutAfter, when > 0, closes the connection after that many bytes of
	// the body, the headers having promised all of it.
	CutAfter int64
	// Drip, when > 0, pauses that long before each DripChunk bytes (a
	// slow registry). The pause ends when the client goes away or the
	// stub is closed.
	Drip      time.Duration
	DripChunk int
	// Status, when set, is answered instead (with an empty body).
	Status int
	// NoRanges ignores Range headers: the whole body, 200.
	NoRanges bool
}

// Server is a running stub.
type Server struct {
	// URL is "http://127.0.0.1:port", Host "127.0.0.1:port".
	URL, Host string

	srv  *httptest.Server
	quit chan struct{}

	mu        sync.Mutex
	blobs     map[string]map[digest.Digest]Blob // repo → digest → blob (manifests too)
	tags      map[string]map[string]digest.Digest
	behaviour map[digest.Digest]Behaviour
	gets      map[digest.Digest]int
}

// Start runs a stub for t and closes it in t.Cleanup.
func Start(t TB) *Server {
	t.Helper()
	s := &Server{
		quit:      make(chan struct{}),
		blobs:     map[string]map[digest.Digest]Blob{},
		tags:      map[string]map[string]digest.Digest{},
		behaviour: map[digest.Digest]Behaviour{},
		gets:      map[digest.Digest]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	s.Host = strings.TrimPrefix(s.srv.URL, "http://")
	t.Cleanup(s.Close)
	return s
}

// Close ends the drips in progress and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Put stores blobs (layers, configs or manifests) in repo, served by digest.
func (s *Server) Put(repo string, blobs ...Blob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.blobs[repo] == nil {
		s.blobs[repo] = map[digest.Digest]Blob{}
	}
	for _, b := range blobs {
		s.blobs[repo][b.Desc.Digest] = b
	}
}

// Tag points repo:tag at the manifest or index m, which it stores.
func (s *Server) Tag(repo, tag string, m Blob) {
	s.Put(repo, m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tags[repo] == nil {
		s.tags[repo] = map[string]digest.Digest{}
	}
	s.tags[repo][tag] = m.Desc.Digest
}

// Push stores a built image's blobs in repo and tags its manifest (tag ""
// stores it by digest only). It returns the reference "host/repo:tag" (or
// "@digest").
func (s *Server) Push(repo, tag string, img Built) string {
	s.Put(repo, img.Blobs()...)
	if tag == "" {
		s.Put(repo, img.Manifest)
		return s.Host + "/" + repo + "@" + img.Manifest.Desc.Digest.String()
	}
	s.Tag(repo, tag, img.Manifest)
	return s.Host + "/" + repo + ":" + tag
}

// Behave sets how digest d is served, in every repository.
func (s *Server) Behave(d digest.Digest, b Behaviour) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behaviour[d] = b
}

// Gets counts the GET requests for digest d (blob or manifest) so far.
func (s *Server) Gets(d digest.Digest) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[d]
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "read-only stub", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	var repo, object string
	var manifest bool
	if i := strings.LastIndex(p, "/manifests/"); strings.HasPrefix(p, "/v2/") && i > 3 {
		repo, object, manifest = p[4:i], p[i+len("/manifests/"):], true
	} else if i := strings.LastIndex(p, "/blobs/"); strings.HasPrefix(p, "/v2/") && i > 3 {
		repo, object = p[4:i], p[i+len("/blobs/"):]
	} else {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	d := digest.Digest(object)
	if manifest {
		if t, ok := s.tags[repo][object]; ok {
			d = t
		}
	}
	b, ok := s.blobs[repo][d]
	beh := s.behaviour[d]
	if ok && r.Method == http.MethodGet {
		s.gets[d]++
	}
	s.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errors":[{"code":"%s","message":"unknown"}]}`, map[bool]string{true: "MANIFEST_UNKNOWN", false: "BLOB_UNKNOWN"}[manifest])
		return
	}
	if beh.Status != 0 {
		w.WriteHeader(beh.Status)
		return
	}
	body := b.Data
	if beh.Body != nil {
		body = beh.Body
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", "application/octet-stream")
	if manifest {
		h.Set("Content-Type", b.Desc.MediaType)
	}
	status := http.StatusOK
	if start, end, ok := parseRange(r.Header.Get("Range"), int64(len(body))); ok && !beh.NoRanges && !manifest {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, len(body)))
		body, status = body[start:end], http.StatusPartialContent
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if beh.CutAfter > 0 && beh.CutAfter < int64(len(body)) {
		body = body[:beh.CutAfter]
		defer panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	chunk := len(body)
	if beh.Drip > 0 {
		chunk = beh.DripChunk
		if chunk <= 0 {
			chunk = 1024
		}
	}
	for len(body) > 0 {
		if beh.Drip > 0 {
			select {
			case <-time.After(beh.Drip):
			case <-r.Context().Done():
				return
			case <-s.quit:
				return
			}
		}
		n := min(chunk, len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		body = body[n:]
	}
}

// parseRange reads a single "bytes=a-b" or "bytes=a-" range within size.
func parseRange(v string, size int64) (start, end int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(v, ",") {
		return 0, 0, false
	}
	a, b, _ := strings.Cut(v, "-")
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start > size {
		return 0, 0, false
	}
	end = size
	if b != "" {
		last, err := strconv.ParseInt(b, 10, 64)
		if err != nil || last < start {
			return 0, 0, false
		}
		end = min(last+1, size)
	}
	return start, end, true
}

// Entry is one tar entry for Tar.
type Entry struct {
	Header tar.Header
	Data   []byte
}

// File is a regular file entry (mode 0644).
func File(name string, data []byte) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, Data: data}
}

// Dir is a directory entry (mode 0755).
func Dir(name string) Entry {
	return Entry{Header: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

// Tar writes entries as a tar stream; an entry's Size is its Data's unless
// set (a header may promise more than Data, for streams made elsewhere).
func Tar(entries ...Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(0, 0)
		}
		if h.Size == 0 && h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			panic(fmt.Sprintf("regstub: tar header %s: %v", h.Name, err))
		}
		if _, err := tw.Write(e.Data); err != nil {
			panic(fmt.Sprintf("regstub: tar %s: %v", h.Name, err))
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// Gzip compresses b (best compression, so zeros make a small bomb).
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// GzipBomb is a gzip layer holding one file of size zero bytes, made as a
// stream (the tar is never held whole): a few hundred KiB per 100 MiB.
func GzipBomb(name string, size int64) Layer {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	d := digest.Canonical.Digester()
	tw := tar.NewWriter(io.MultiWriter(zw, d.Hash()))
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)}); err != nil {
		panic(err)
	}
	zeros := make([]byte, 1<<20)
	for n := size; n > 0; n -= int64(len(zeros)) {
		if _, err := tw.Write(zeros[:min(n, int64(len(zeros)))]); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	zw.Close()
	return Layer{Blob: NewBlob(ocispec.MediaTypeImageLayerGzip, buf.Bytes()), DiffID: d.Digest()}
}

// Layer is a layer blob and the diff id of its uncompressed tar.
type Layer struct {
	Blob   Blob
	DiffID digest.Digest
}

// NewLayer makes a layer of blob, an uncompressed or gzip tar (detected),
// with the OCI media type that says which; the diff id is computed.
func NewLayer(blob []byte) Layer {
	mt, raw := ocispec.MediaTypeImageLayer, blob
	if bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) {
		mt = ocispec.MediaTypeImageLayerGzip
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			panic(err)
		}
		d := digest.Canonical.Digester()
		if _, err := zr.WriteTo(d.Hash()); err != nil {
			panic(err)
		}
		return Layer{Blob: NewBlob(mt, blob), DiffID: d.Digest()}
	}
	return Layer{Blob: NewBlob(mt, blob), DiffID: digest.FromBytes(raw)}
}

// Image describes an image to Build.
type Image struct {
	// Platform defaults to linux and the host's architecture.
	Platform ocispec.Platform
	Layers   []Layer
	// Docker uses Docker schema2 media types for manifest and config.
	Docker bool
	// EditConfig and EditManifest, when set, change the config and the
	// manifest before they are encoded (a lying size, an unknown media
	// type, more diff ids).
	EditConfig   func(*ocispec.Image)
	EditManifest func(*ocispec.Manifest)
}

// Built is an encoded image.
type Built struct {
	Manifest Blob
	Config   Blob
	Layers   []Blob
}

// Blobs lists the config and the layers.
func (b Built) Blobs() []Blob { return append([]Blob{b.Config}, b.Layers...) }

// Docker media types the stub writes.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

// Build encodes the config and the manifest of img. The manifest's
// descriptor carries the platform (for an index).
func (img Image) Build() Built {
	p := img.Platform
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = runtime.GOARCH
	}
	cfg := ocispec.Image{Platform: p, RootFS: ocispec.RootFS{Type: "layers"}}
	var out Built
	for _, l := range img.Layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		out.Layers = append(out.Layers, l.Blob)
	}
	if img.EditConfig != nil {
		img.EditConfig(&cfg)
	}
	cmt, mmt := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if img.Docker {
		cmt, mmt = MediaTypeDockerConfig, MediaTypeDockerManifest
	}
	out.Config = NewBlob(cmt, mustJSON(cfg))
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: mmt, Config: out.Config.Desc}
	for _, l := range out.Layers {
		m.Layers = append(m.Layers, l.Desc)
	}
	if img.EditManifest != nil {
		img.EditManifest(&m)
	}
	out.Manifest = NewBlob(m.MediaType, mustJSON(m))
	out.Manifest.Desc.Platform = &p
	return out
}

// Index encodes an OCI index of manifests (descriptors with platforms;
// the manifests they name need not be stored).
func Index(manifests ...ocispec.Descriptor) Blob {
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
	return NewBlob(ocispec.MediaTypeImageIndex, mustJSON(idx))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
