// Package docker is keel's registry resolver: the OCI distribution API
// (and Docker's registry v2) over HTTP, with per-host mirrors, TLS and
// credentials from its config.
//
// Resolve asks each host for the manifest (HEAD, then GET when the HEAD
// says too little), mirrors first; Fetch reads manifests whole (checked
// against their digest and a size limit) and blobs as a stream, in
// parallel byte ranges when they are large, resuming from where a failed
// or stalled request stopped. A blob fetched from offset 0 is checked
// against its digest as it ends; one fetched from further on cannot be,
// and is checked by keeld's content store when it commits the ingest.
// Push checks what the registry has (HEAD), mounts blobs the registry
// holds in another repository, and uploads the rest in one request or in
// chunks.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/hashicorp/go-hclog"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// Manifest media types the resolver asks for and recognises.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var manifestTypes = []string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	mediaTypeDockerManifestList,
	mediaTypeDockerManifest,
}

// accept is the Accept header of manifest requests.
var accept = strings.Join(append(append([]string(nil), manifestTypes...), "*/*;q=0.1"), ", ")

func isManifest(mt string) bool {
	for _, t := range manifestTypes {
		if mt == t {
			return true
		}
	}
	return false
}

// Resolver is the docker resolver.
type Resolver struct {
	cfg    *settings
	logger hclog.Logger

	mu        sync.Mutex
	hostCache map[string]hostSet
	// noRanges marks hosts that answered a range request badly: their
	// blobs come in one stream.
	noRanges map[string]bool
	// seen remembers, per registry and digest, a repository holding it, for
	// cross-repository mounts.
	seen map[string]map[digest.Digest]string

	auth authCache

	// parts recycles the part_size buffers of parallel fetches across
	// fetches; the collector drops them once fetches stop.
	parts sync.Pool
}

// getPart returns a buffer of part_size bytes.
func (r *Resolver) getPart() []byte {
	if b, ok := r.parts.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, r.cfg.partSize)
}

// putPart hands a buffer from getPart back.
func (r *Resolver) putPart(b []byte) {
	b = b[:cap(b)]
	r.parts.Put(&b)
}

var (
	_ resolver.Resolver  = (*Resolver)(nil)
	_ resolver.Explainer = (*Resolver)(nil)
)

// New is the plugin's factory.
func New(_ context.Context, env sdk.Env) (resolver.Resolver, error) {
	cfg, err := parseConfig(env.Config)
	if err != nil {
		return nil, err
	}
	logger := env.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Resolver{
		cfg: cfg, logger: logger,
		hostCache: map[string]hostSet{}, noRanges: map[string]bool{}, seen: map[string]map[digest.Digest]string{},
		auth: authCache{basic: map[string]bool{}, tokens: map[string]map[string]token{}},
	}, nil
}

// Close drops idle connections.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, hs := range r.hostCache {
		for _, h := range hs.hosts {
			h.client.CloseIdleConnections()
		}
	}
	return nil
}

// ref is a parsed reference.
type ref struct {
	named    reference.Named
	registry string // "docker.io", "127.0.0.1:5000"
	repo     string // "library/busybox"
	tag      string
	digest   digest.Digest
}

// object is what the manifest endpoint is asked for: the digest, or the tag.
func (r ref) object() string {
	if r.digest != "" {
		return r.digest.String()
	}
	return r.tag
}

func (r ref) String() string { return r.named.String() }

// parseRef normalises s: "busybox" is docker.io/library/busybox:latest.
func parseRef(s string) (ref, error) {
	named, err := resolver.ParseReference(s)
	if err != nil {
		return ref{}, err
	}
	named = reference.TagNameOnly(named)
	out := ref{named: named, registry: reference.Domain(named), repo: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		out.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		out.digest = d.Digest()
	}
	return out, nil
}

// Resolve implements resolver.Resolver.
func (r *Resolver) Resolve(ctx context.Context, s string) (string, ocispec.Descriptor, error) {
	name, desc, _, err := r.ResolveExplain(ctx, s)
	return name, desc, err
}

// ResolveExplain resolves s and lists the hosts tried, in order.
func (r *Resolver) ResolveExplain(ctx context.Context, s string) (string, ocispec.Descriptor, []resolver.Attempt, error) {
	rf, err := parseRef(s)
	if err != nil {
		return "", ocispec.Descriptor{}, nil, err
	}
	hosts, skipped, err := r.hostsFor(rf.registry)
	if err != nil {
		return "", ocispec.Descriptor{}, nil, err
	}
	var attempts []resolver.Attempt
	var errs []error
	for i, h := range hosts {
		why := "upstream registry"
		if h.role == "mirror" {
			why = fmt.Sprintf("mirror %d of %d", i+1, len(hosts)-btoi(hosts[len(hosts)-1].role == "upstream"))
		}
		if i > 0 {
			why += ", after " + hosts[i-1].base() + " failed"
		}
		desc, err := r.resolveOn(ctx, h, rf)
		if err == nil {
			attempts = append(attempts, resolver.Attempt{Host: h.base(), Role: h.role, Used: true, Reason: why})
			for j := i + 1; j < len(hosts); j++ {
				attempts = append(attempts, resolver.Attempt{Host: hosts[j].base(), Role: hosts[j].role, Reason: "not needed: " + h.base() + " answered"})
			}
			for _, sk := range skipped {
				attempts = append(attempts, resolver.Attempt{Host: sk, Role: "upstream", Reason: "skipped: fallback = false"})
			}
			r.remember(rf.registry, desc.Digest, rf.repo)
			return rf.String(), desc, attempts, nil
		}
		attempts = append(attempts, resolver.Attempt{Host: h.base(), Role: h.role, Reason: why + "; failed: " + err.Error()})
		errs = append(errs, err)
		r.logger.Debug("resolve failed on host", "host", h.base(), "ref", rf.String(), "error", err)
	}
	for _, sk := range skipped {
		attempts = append(attempts, resolver.Attempt{Host: sk, Role: "upstream", Reason: "skipped: fallback = false"})
	}
	// The upstream's answer (the last host) classifies the error; the
	// mirrors' failures are named too.
	err = errs[len(errs)-1]
	if len(errs) > 1 {
		err = fmt.Errorf("%w (also tried: %v)", err, errors.Join(errs[:len(errs)-1]...))
	}
	return "", ocispec.Descriptor{}, attempts, err
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// resolveOn asks one host for rf's manifest: HEAD, then GET when the HEAD
// lacks the digest or media type (or is refused).
func (r *Resolver) resolveOn(ctx context.Context, h *host, rf ref) (ocispec.Descriptor, error) {
	u := h.url(rf.repo, "manifests/"+rf.object())
	scopes := []string{"repository:" + rf.repo + ":pull"}
	resp, err := r.do(ctx, h, rf, http.MethodHead, u, scopes, nil, func(req *http.Request) { req.Header.Set("Accept", accept) })
	if err == nil {
		resp.Body.Close()
		d := digest.Digest(resp.Header.Get("Docker-Content-Digest"))
		mt := mediaType(resp.Header.Get("Content-Type"))
		if d.Validate() == nil && resp.ContentLength > 0 && isManifest(mt) && (rf.digest == "" || rf.digest == d) {
			if resp.ContentLength > r.cfg.maxManifest {
				return ocispec.Descriptor{}, r.tooLarge(h, rf, resp.ContentLength)
			}
			return ocispec.Descriptor{MediaType: mt, Digest: d, Size: resp.ContentLength}, nil
		}
	} else if errdefs.IsNotFound(err) || errdefs.IsPermissionDenied(err) {
		return ocispec.Descriptor{}, err
	}
	data, mt, err := r.getManifest(ctx, h, rf, rf.object(), "")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(data)
	if rf.digest != "" && d != rf.digest {
		return ocispec.Descriptor{}, fmt.Errorf("%s: %s: manifest has digest %s: %w", h.base(), rf, d, errdefs.ErrDataLoss)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}, nil
}

func (r *Resolver) tooLarge(h *host, rf ref, n int64) error {
	return fmt.Errorf("%s: %s: manifest of %d bytes is over the %d byte limit (max_manifest_size): %w", h.base(), rf, n, r.cfg.maxManifest, errdefs.ErrResourceExhausted)
}

// getManifest reads a manifest whole, within the size limit. want, when
// set, is the media type expected (Accept asks for it first).
func (r *Resolver) getManifest(ctx context.Context, h *host, rf ref, object, want string) ([]byte, string, error) {
	u := h.url(rf.repo, "manifests/"+object)
	resp, err := r.do(ctx, h, rf, http.MethodGet, u, []string{"repository:" + rf.repo + ":pull"}, nil, func(req *http.Request) {
		a := accept
		if want != "" && !isManifest(want) {
			a = want + ", " + accept
		}
		req.Header.Set("Accept", a)
	})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.ContentLength > r.cfg.maxManifest {
		return nil, "", r.tooLarge(h, rf, resp.ContentLength)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, r.cfg.maxManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %s: read manifest: %v: %w", h.base(), rf, err, errdefs.ErrUnavailable)
	}
	if int64(len(data)) > r.cfg.maxManifest {
		return nil, "", r.tooLarge(h, rf, int64(len(data)))
	}
	return data, mediaType(resp.Header.Get("Content-Type")), nil
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.TrimSpace(mt)
}

// remember notes that repo of registry holds d (for mounts).
func (r *Resolver) remember(registry string, d digest.Digest, repo string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[registry] == nil {
		r.seen[registry] = map[digest.Digest]string{}
	}
	r.seen[registry][d] = repo
}

// classify maps an HTTP status to an error class.
func classify(status int) error {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case status == http.StatusNotFound:
		return errdefs.ErrNotFound
	case status == http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	case status == http.StatusRequestedRangeNotSatisfiable:
		return errdefs.ErrOutOfRange
	case status >= 500:
		return errdefs.ErrUnavailable
	case status >= 400:
		return errdefs.ErrInvalidArgument
	}
	return errdefs.ErrUnknown
}

// retryable says whether a response status is worth another try.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// do sends one request to h with authentication, retrying with backoff on
// connection errors, 5xx and 429 (honouring Retry-After) when the body can
// be sent again. A 401 gets the challenge answered and one more try. It
// returns a 2xx response, or an error naming the host, the reference and
// the status.
func (r *Resolver) do(ctx context.Context, h *host, rf ref, method, u string, scopes []string, body func() io.Reader, setup func(*http.Request)) (*http.Response, error) {
	authRetried := false
	var lastErr error
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if body != nil {
			// A streamed body gives nil the second time: it cannot be
			// sent again.
			if rd = body(); rd == nil {
				return nil, lastErr
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v: %w", h.base(), rf, err, errdefs.ErrInvalidArgument)
		}
		if setup != nil {
			setup(req)
		}
		if err := r.authorize(ctx, h, req, scopes); err != nil {
			return nil, err
		}
		resp, err := h.client.Do(req)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			err = fmt.Errorf("%s %s: %s: %v: %w", method, h.base(), rf, err, errdefs.ErrUnavailable)
		case resp.StatusCode == http.StatusUnauthorized && !authRetried:
			authRetried = true
			ok, cerr := r.challenge(ctx, h, resp, scopes)
			drain(resp)
			if cerr != nil {
				return nil, cerr
			}
			if ok {
				attempt--
				lastErr = statusError(method, h, rf, resp)
				continue
			}
			return nil, statusError(method, h, rf, resp)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		case retryable(resp.StatusCode):
			wait = retryAfter(resp)
			err = statusError(method, h, rf, resp)
			drain(resp)
		default:
			err = statusError(method, h, rf, resp)
			drain(resp)
			return nil, err
		}
		if attempt >= r.cfg.retries {
			return nil, err
		}
		lastErr = err
		if wait == 0 {
			wait = backoff(attempt)
		}
		r.logger.Debug("retrying request", "method", method, "host", h.base(), "ref", rf.String(), "in", wait, "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// statusError names the request, the registry, the reference and the
// status, with the registry's error code when it sent one.
func statusError(method string, h *host, rf ref, resp *http.Response) error {
	detail := ""
	if method != http.MethodHead {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if s := strings.TrimSpace(string(b)); s != "" {
			detail = ": " + s
		}
	}
	return fmt.Errorf("%s %s: %s: %s%s: %w", method, h.base(), rf, resp.Status, detail, classify(resp.StatusCode))
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// backoff is 250ms doubling per attempt, with jitter, at most 8s.
func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt, 5)
	d = min(d, 8*time.Second)
	return d/2 + rand.N(d/2+1)
}

// retryAfter reads Retry-After (seconds or a date), at most a minute.
func retryAfter(resp *http.Response) time.Duration {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, time.Minute)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), time.Minute)
	}
	return 0
}
