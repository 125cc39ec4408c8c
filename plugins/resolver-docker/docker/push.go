package docker

import (
	"bytes"
	"context"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// AnnotationSource, on a pushed blob's descriptor, names repositories of
// the same registry that hold it ("<repo>[,<repo>…]"): Push mounts the blob
// from one instead of uploading it.
const AnnotationSource = "keel.io/distribution.source"

// Push implements resolver.Resolver: manifests by tag (or by digest when
// the reference has one), blobs after a HEAD, by mount when a repository
// of the registry is known to hold them, else by upload.
func (r *Resolver) Push(ctx context.Context, s string, desc ocispec.Descriptor, rd io.Reader) error {
	rf, err := parseRef(s)
	if err != nil {
		return err
	}
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("push %s: descriptor digest %q: %v: %w", rf, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	hosts, _, err := r.hostsFor(rf.registry)
	if err != nil {
		return err
	}
	// Mirrors only serve pulls: pushes go to the registry itself.
	h := hosts[len(hosts)-1]
	if h.role != "upstream" {
		return fmt.Errorf("push %s: fallback = false leaves no upstream to push to: %w", rf, errdefs.ErrFailedPrecondition)
	}
	if isManifest(desc.MediaType) {
		return r.pushManifest(ctx, h, rf, desc, rd)
	}
	return r.pushBlob(ctx, h, rf, desc, rd)
}

func (r *Resolver) pushManifest(ctx context.Context, h *host, rf ref, desc ocispec.Descriptor, rd io.Reader) error {
	if desc.Size > r.cfg.maxManifest {
		return r.tooLarge(h, rf, desc.Size)
	}
	data, err := io.ReadAll(io.LimitReader(rd, desc.Size+1))
	if err != nil {
		return fmt.Errorf("push %s: read manifest: %w", rf, err)
	}
	if got := digest.FromBytes(data); int64(len(data)) != desc.Size || got != desc.Digest {
		return fmt.Errorf("push %s: manifest is %d bytes of digest %s, descriptor says %d of %s: %w", rf, len(data), got, desc.Size, desc.Digest, errdefs.ErrFailedPrecondition)
	}
	object := rf.tag
	if rf.digest != "" {
		object = rf.digest.String()
		if rf.digest != desc.Digest {
			return fmt.Errorf("push %s: reference digest differs from the manifest's %s: %w", rf, desc.Digest, errdefs.ErrInvalidArgument)
		}
	}
	scopes := []string{"repository:" + rf.repo + ":pull,push"}
	u := h.url(rf.repo, "manifests/"+object)
	// Already there under this name: nothing to send.
	if resp, err := r.do(ctx, h, rf, http.MethodHead, u, scopes, nil, func(req *http.Request) { req.Header.Set("Accept", accept) }); err == nil {
		resp.Body.Close()
		if digest.Digest(resp.Header.Get("Docker-Content-Digest")) == desc.Digest {
			return fmt.Errorf("push %s: manifest %s: %w", rf, desc.Digest, errdefs.ErrAlreadyExists)
		}
	}
	resp, err := r.do(ctx, h, rf, http.MethodPut, u, scopes, func() io.Reader { return bytes.NewReader(data) }, func(req *http.Request) {
		req.Header.Set("Content-Type", desc.MediaType)
		req.ContentLength = int64(len(data))
	})
	if err != nil {
		return err
	}
	drain(resp)
	r.remember(rf.registry, desc.Digest, rf.repo)
	return nil
}

func (r *Resolver) pushBlob(ctx context.Context, h *host, rf ref, desc ocispec.Descriptor, rd io.Reader) error {
	scopes := []string{"repository:" + rf.repo + ":pull,push"}
	exists := fmt.Errorf("push %s: blob %s: %w", rf, desc.Digest, errdefs.ErrAlreadyExists)
	resp, err := r.do(ctx, h, rf, http.MethodHead, h.url(rf.repo, "blobs/"+desc.Digest.String()), scopes, nil, nil)
	if err == nil {
		resp.Body.Close()
		return exists
	} else if !errdefs.IsNotFound(err) {
		return err
	}

	// Start the upload, as a mount when another repository has the blob.
	start := h.url(rf.repo, "blobs/uploads/")
	from := r.mountSources(rf, desc)
	if len(from) > 0 {
		for _, f := range from {
			scopes = append(scopes, "repository:"+f+":pull")
		}
		start += "?" + url.Values{"mount": {desc.Digest.String()}, "from": {from[0]}}.Encode()
	}
	resp, err = r.do(ctx, h, rf, http.MethodPost, start, scopes, func() io.Reader { return http.NoBody }, nil)
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode == http.StatusCreated {
		r.logger.Debug("blob mounted", "ref", rf.String(), "digest", desc.Digest, "from", from[0])
		r.remember(rf.registry, desc.Digest, rf.repo)
		return exists
	}
	loc, err := location(resp)
	if err != nil {
		return fmt.Errorf("POST %s: %s: %w", h.base(), rf, err)
	}

	// The data is streamed once; it is checked as it goes, so a reader
	// shorter, longer or other than desc fails before the registry commits.
	cr := &countingReader{r: io.LimitReader(rd, desc.Size+1), h: desc.Digest.Algorithm().Hash()}
	once := func(rd io.Reader) func() io.Reader {
		sent := false
		return func() io.Reader {
			if sent {
				return nil
			}
			sent = true
			return rd
		}
	}
	if desc.Size > r.cfg.chunkSize {
		for off := int64(0); off < desc.Size; {
			n := min(r.cfg.chunkSize, desc.Size-off)
			chunk := io.LimitReader(cr, n)
			resp, err := r.do(ctx, h, rf, http.MethodPatch, loc.String(), scopes, once(chunk), func(req *http.Request) {
				req.Header.Set("Content-Type", "application/octet-stream")
				req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
				req.ContentLength = n
			})
			if err != nil {
				r.cancelUpload(h, rf, loc, scopes)
				return err
			}
			drain(resp)
			if cr.n != off+n {
				r.cancelUpload(h, rf, loc, scopes)
				return fmt.Errorf("push %s: blob %s: reader ended at %d of %d bytes: %w", rf, desc.Digest, cr.n, desc.Size, errdefs.ErrFailedPrecondition)
			}
			off += n
			if loc, err = location(resp); err != nil {
				return fmt.Errorf("PATCH %s: %s: %w", h.base(), rf, err)
			}
		}
	}
	q := loc.Query()
	q.Set("digest", desc.Digest.String())
	loc.RawQuery = q.Encode()
	var body func() io.Reader
	length := int64(0)
	if cr.n == 0 {
		body, length = once(io.LimitReader(cr, desc.Size)), desc.Size
	} else {
		body = func() io.Reader { return http.NoBody }
	}
	resp, err = r.do(ctx, h, rf, http.MethodPut, loc.String(), scopes, body, func(req *http.Request) {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.ContentLength = length
	})
	if err != nil {
		r.cancelUpload(h, rf, loc, scopes)
		if length > 0 && cr.n != desc.Size {
			return fmt.Errorf("push %s: blob %s: reader ended at %d of %d bytes: %w", rf, desc.Digest, cr.n, desc.Size, errdefs.ErrFailedPrecondition)
		}
		if errdefs.IsInvalidArgument(err) && strings.Contains(err.Error(), "DIGEST_INVALID") {
			return fmt.Errorf("push %s: blob %s: content does not match the descriptor: %v: %w", rf, desc.Digest, err, errdefs.ErrFailedPrecondition)
		}
		return err
	}
	drain(resp)
	// The limit reader stopped at desc.Size: one more byte means r is longer.
	if extra, _ := rd.Read(make([]byte, 1)); extra > 0 || cr.n != desc.Size || digest.NewDigest(desc.Digest.Algorithm(), cr.h) != desc.Digest {
		return fmt.Errorf("push %s: blob %s: the reader differs from the descriptor (%d bytes read): %w", rf, desc.Digest, cr.n, errdefs.ErrFailedPrecondition)
	}
	r.remember(rf.registry, desc.Digest, rf.repo)
	return nil
}

// mountSources lists repositories of rf's registry known to hold desc: the
// descriptor's AnnotationSource, then what this resolver saw.
func (r *Resolver) mountSources(rf ref, desc ocispec.Descriptor) []string {
	var out []string
	for _, s := range strings.Split(desc.Annotations[AnnotationSource], ",") {
		if s = strings.TrimSpace(s); s != "" && s != rf.repo {
			out = append(out, s)
		}
	}
	r.mu.Lock()
	if repo, ok := r.seen[rf.registry][desc.Digest]; ok && repo != rf.repo {
		out = append(out, repo)
	}
	r.mu.Unlock()
	return out
}

func (r *Resolver) cancelUpload(h *host, rf ref, loc *url.URL, scopes []string) {
	resp, err := r.do(context.Background(), h, rf, http.MethodDelete, loc.String(), scopes, nil, nil)
	if err == nil {
		drain(resp)
	}
}

// location is the upload URL a response hands over, resolved against the
// request.
func location(resp *http.Response) (*url.URL, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return nil, fmt.Errorf("%s without upload Location: %w", resp.Status, errdefs.ErrUnavailable)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil {
		return nil, fmt.Errorf("upload Location %q: %w", l, errdefs.ErrUnavailable)
	}
	return u, nil
}

// countingReader counts and hashes what is read through it.
type countingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.h.Write(p[:n])
	return n, err
}
