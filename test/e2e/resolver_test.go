package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/resolvertest"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// contentPlugin is the content store every keeld needs.
const contentPlugin = `
plugin "content" "local" {
  path = "keel-content-local"
}
`

// hclIdent is what may stand unquoted as an attribute name.
var hclIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// resolverPlugin is a plugin "resolver" "docker" block whose config block
// holds cfg, a JSON object in the docker resolver's shape. Each top-level
// key becomes an attribute whose value is the key's JSON: a JSON value is an
// HCL expression, once the template openers "${" and "%{" (only ever inside
// JSON strings) are escaped.
func resolverPlugin(cfg json.RawMessage) (string, error) {
	var top map[string]json.RawMessage
	if len(cfg) > 0 {
		if err := json.Unmarshal(cfg, &top); err != nil {
			return "", fmt.Errorf("resolver config: %w", err)
		}
	}
	var b strings.Builder
	b.WriteString("plugin \"resolver\" \"docker\" {\n  path = \"keel-resolver-docker\"\n  config {\n")
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	escape := strings.NewReplacer("${", "$${", "%{", "%%{")
	for _, k := range keys {
		if !hclIdent.MatchString(k) {
			return "", fmt.Errorf("resolver config key %q is not an HCL attribute name", k)
		}
		fmt.Fprintf(&b, "    %s = %s\n", k, escape.Replace(string(top[k])))
	}
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

// TestResolverConformance runs the whole resolver suite through keeld: each
// case starts a keeld whose resolver plugin has the config the suite made
// for its registries, and drives it with client.ResolverService.
func TestResolverConformance(t *testing.T) {
	t.Parallel()
	resolvertest.Run(conformance.Go(t), keeldResolverOpener())
}

// keeldResolverOpener opens keeld's resolver, in a keeld started for the
// case with the suite's plugin config.
func keeldResolverOpener() conformance.Opener[resolver.Resolver] {
	return func(ctx context.Context, t conformance.T, root string) (resolver.Resolver, error) {
		t.Helper()
		block, err := resolverPlugin(conformance.SuiteConfig(ctx, nil))
		if err != nil {
			return nil, err
		}
		c, stop, err := startCaseKeeld(ctx, t, root, contentPlugin+block)
		if err != nil {
			return nil, err
		}
		plugins, err := c.Plugins(ctx)
		if err != nil {
			return nil, errors.Join(err, c.Close(), stop())
		}
		for _, p := range plugins {
			if p.Kind == "resolver" {
				// keeld's API keeps FetchToFile for keeld (it names the
				// content store's file): the service does not offer it.
				conformance.ReportCapabilities(t, slices.DeleteFunc(slices.Clone(p.Capabilities), func(c string) bool {
					return c == resolver.CapabilityFetchToFile
				}))
			}
		}
		return &keeldResolver{Resolver: c.ResolverService(""), close: func() error {
			return errors.Join(c.Close(), stop())
		}}, nil
	}
}

// keeldResolver is keeld's resolver service whose Close stops keeld.
type keeldResolver struct {
	resolver.Resolver
	close func() error
}

var _ resolver.Explainer = (*keeldResolver)(nil)

func (k *keeldResolver) ResolveExplain(ctx context.Context, ref string) (string, ocispec.Descriptor, []resolver.Attempt, error) {
	return resolver.Explain(ctx, k.Resolver, ref)
}

func (k *keeldResolver) Close() error {
	return errors.Join(k.Resolver.Close(), k.close())
}

// startCaseKeeld starts keeld on root with the plugin blocks body and
// returns a client once it answers, and a stop (SIGTERM, SIGKILL after 10s)
// that is also run at the case's cleanup. Config, log, state and socket go
// in a short temporary directory: a socket path must stay under 108 bytes.
func startCaseKeeld(ctx context.Context, t conformance.T, root, body string) (*client.Client, func() error, error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kr")
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "k.sock")
	cfg := filepath.Join(dir, "keeld.hcl")
	text := fmt.Sprintf("root = %q\nstate = %q\nplugin_dir = %q\ngrpc {\n  address = %q\n}\n%s",
		root, filepath.Join(dir, "state"), binDir, socket, body)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, nil, err
	}
	log, err := os.Create(filepath.Join(dir, "keeld.log"))
	if err != nil {
		return nil, nil, err
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(binDir, "keeld"), "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := sync.OnceValue(func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return errors.New("keeld did not stop within 10s of SIGTERM")
		}
	})
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("keeld log:\n%s", b)
		}
	})
	c, err := readyClient(ctx, socket, done)
	if err != nil {
		return nil, nil, errors.Join(err, stop())
	}
	return c, stop, nil
}

// startRegistry starts an open loopback registry, or skips (fails, strict)
// without docker-registry.
func startRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Start(t, registry.Options{})
	if errors.Is(err, registry.ErrNoRegistry) {
		testkit.SkipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestImageResolveCLI resolves a pushed image with `keel image resolve`:
// by tag, by digest, with --explain through a dead mirror, and a missing
// tag as a one-line NotFound.
func TestImageResolveCLI(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	img, err := registry.BuildImage(registry.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "e2e/busybox", "v1", img); err != nil {
		t.Fatal(err)
	}
	port := reg.Host[strings.LastIndex(reg.Host, ":")+1:]
	dead := deadAddr(t)
	// localhost:<port> is the same registry behind a mirror that is down.
	block, err := resolverPlugin(json.RawMessage(fmt.Sprintf(`{"retries": 0, "timeout": "5s", "host": {
		%q: {"plain_http": true},
		"localhost:%s": {"plain_http": true, "mirrors": ["http://%s"]}}}`, reg.Host, port, dead)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	k := e.startWith(t, e.config(t, contentPlugin+block))

	want := img.Manifest.Desc
	tagRef := reg.Host + "/e2e/busybox:v1"
	digestRef := reg.Host + "/e2e/busybox@" + want.Digest.String()
	for _, tc := range []struct{ ref, name string }{
		{tagRef, tagRef},
		{digestRef, digestRef},
	} {
		out := k.ok("image", "resolve", tc.ref)
		wantOut := fmt.Sprintf("%s\n  %s\n  %s\n  %d bytes\n", tc.name, want.MediaType, want.Digest, want.Size)
		if out != wantOut {
			t.Errorf("keel image resolve %s:\n%s\nwant:\n%s", tc.ref, out, wantOut)
		}
		var got struct {
			Name       string             `json:"name"`
			Descriptor ocispec.Descriptor `json:"descriptor"`
		}
		k.okJSON(&got, "image", "resolve", tc.ref)
		if got.Name != tc.name || got.Descriptor.Digest != want.Digest || got.Descriptor.Size != want.Size || got.Descriptor.MediaType != want.MediaType {
			t.Errorf("keel image resolve %s --format json: %+v, want %s %+v", tc.ref, got, tc.name, want)
		}
		if q := k.ok("image", "resolve", "-q", tc.ref); q != want.Digest.String()+"\n" {
			t.Errorf("keel image resolve -q %s: %q", tc.ref, q)
		}
	}

	// --explain: the registry itself, used.
	out := k.ok("image", "resolve", "--explain", tagRef)
	if !regexp.MustCompile(`(?m)^hosts tried:\n\* 1\. upstream +http://` + regexp.QuoteMeta(reg.Host) + `/`).MatchString(out) {
		t.Errorf("keel image resolve --explain %s: no used upstream %s:\n%s", tagRef, reg.Host, out)
	}
	// Through the dead mirror: the mirror tried and skipped, then the
	// upstream used.
	viaMirror := "localhost:" + port + "/e2e/busybox:v1"
	var explained struct {
		Descriptor ocispec.Descriptor `json:"descriptor"`
		Attempts   []resolver.Attempt `json:"attempts"`
	}
	k.okJSON(&explained, "image", "resolve", "--explain", viaMirror)
	if a := explained.Attempts; len(a) != 2 || a[0].Role != "mirror" || a[0].Used || !strings.Contains(a[0].Host, dead) ||
		a[1].Role != "upstream" || !a[1].Used || a[0].Reason == "" {
		t.Errorf("keel image resolve --explain %s: attempts %+v, want the mirror %s failed, then the upstream used", viaMirror, a, dead)
	}
	if explained.Descriptor.Digest != want.Digest {
		t.Errorf("keel image resolve --explain %s: %s, want %s", viaMirror, explained.Descriptor.Digest, want.Digest)
	}
	out = k.ok("image", "resolve", "--explain", viaMirror)
	if !strings.Contains(out, "  1. mirror") || !strings.Contains(out, "* 2. upstream") {
		t.Errorf("keel image resolve --explain %s:\n%s\nwant the mirror unmarked, then the upstream marked", viaMirror, out)
	}

	// Missing: exit 1, one line naming the reference and NotFound.
	for _, ref := range []string{reg.Host + "/e2e/busybox:nope", reg.Host + "/e2e/busybox", reg.Host + "/e2e/none:v1"} {
		line := oneLineError(t, k.keel("image", "resolve", ref))
		if !strings.Contains(line, ref) || !strings.Contains(line, "not found") {
			t.Errorf("keel image resolve %s: %q, want a NotFound naming the reference", ref, line)
		}
	}
	// A malformed reference is quoted back.
	line := oneLineError(t, k.keel("image", "resolve", "Bad::Ref"))
	if !strings.Contains(line, `"Bad::Ref"`) {
		t.Errorf("keel image resolve Bad::Ref: %q, want the reference quoted", line)
	}
}

// stallProxy forwards to a registry. Until released, it lets through only
// budget bytes of blob bodies in all, then holds every blob response
// where it is; it records where each blob request started.
type stallProxy struct {
	proxy   *httputil.ReverseProxy
	mu      sync.Mutex
	budget  int64 // bytes still let through while stalling
	stalled chan struct{}
	release chan struct{}
	starts  []int64 // Range start of each blob GET, in order
	phase2  int     // index in starts where the release happened
}

func newStallProxy(t *testing.T, upstream string, budget int64) (*stallProxy, string) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{budget: budget, stalled: make(chan struct{}), release: make(chan struct{})}
	p.proxy = httputil.NewSingleHostReverseProxy(u)
	p.proxy.FlushInterval = -1
	p.proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &stallBody{ReadCloser: resp.Body, p: p, ctx: resp.Request.Context()}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(l)
	t.Cleanup(func() { p.Release(); srv.Close() })
	return p, l.Addr().String()
}

func (p *stallProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		var start int64
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
		p.mu.Lock()
		p.starts = append(p.starts, start)
		p.mu.Unlock()
	}
	p.proxy.ServeHTTP(w, r)
}

// Release lets everything through from now on.
func (p *stallProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.release:
	default:
		p.phase2 = len(p.starts)
		close(p.release)
	}
}

// startsAfterRelease are the Range starts of blob GETs since Release.
func (p *stallProxy) startsAfterRelease() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.starts[p.phase2:])
}

type stallBody struct {
	io.ReadCloser
	p   *stallProxy
	ctx context.Context
}

func (b *stallBody) Read(buf []byte) (int, error) {
	p := b.p
	p.mu.Lock()
	select {
	case <-p.release:
		p.mu.Unlock()
		return b.ReadCloser.Read(buf)
	default:
	}
	if p.budget <= 0 {
		select {
		case <-p.stalled:
		default:
			close(p.stalled)
		}
		p.mu.Unlock()
		select {
		case <-p.release:
			return b.ReadCloser.Read(buf)
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
	if int64(len(buf)) > p.budget {
		buf = buf[:p.budget]
	}
	p.mu.Unlock()
	n, err := b.ReadCloser.Read(buf)
	p.mu.Lock()
	p.budget -= int64(n)
	p.mu.Unlock()
	return n, err
}

// TestFetchResumesAfterPluginKill fetches a blob into keeld's content store
// through the resolver, SIGKILLs the resolver plugin while the registry
// holds the transfer mid-blob, and fetches again once keeld has restarted
// the plugin: the second fetch asks the registry only for the rest, from
// where the partial ingest stopped, and the blob is committed with its
// digest checked.
func TestFetchResumesAfterPluginKill(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	const size = 24 << 20
	data := make([]byte, size)
	rand.Read(data)
	blob := registry.NewBlob(ocispec.MediaTypeImageLayer, data)
	if err := reg.PutBlob(t.Context(), "e2e/big", blob); err != nil {
		t.Fatal(err)
	}
	proxy, proxyHost := newStallProxy(t, reg.URL(), 10<<20)
	// Small parts, two at a time: the parallel path, resumed.
	block, err := resolverPlugin(json.RawMessage(fmt.Sprintf(`{"parallel": 2, "part_size": 4194304,
		"stall_timeout": "5m", "host": {%q: {"plain_http": true}}}`, proxyHost)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	k := e.startWith(t, e.config(t, contentPlugin+block))
	c := k.client(t, "default")
	ref := proxyHost + "/e2e/big:whatever"
	desc := blob.Desc

	// The first fetch: stalled mid-blob, then its plugin killed.
	fetched := make(chan error, 1)
	go func() {
		_, err := c.Fetch(t.Context(), ref, desc)
		fetched <- err
	}()
	select {
	case <-proxy.stalled:
	case err := <-fetched:
		t.Fatalf("first fetch ended before the stall: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the registry proxy never stalled")
	}
	pid := k.plugins()["resolver.docker"].Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the resolver plugin (pid %d): %v", pid, err)
	}
	select {
	case err := <-fetched:
		if err == nil {
			t.Fatal("the first fetch succeeded though its plugin was killed mid-blob")
		}
		t.Logf("first fetch, plugin killed: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first fetch did not end after its plugin was killed")
	}
	cs := c.ContentStore()
	st, err := cs.Status(t.Context(), ingestRef(desc))
	if err != nil {
		t.Fatalf("the partial ingest: %v", err)
	}
	if st.Offset <= 0 || st.Offset >= size {
		t.Fatalf("the partial ingest holds %d of %d bytes; want some", st.Offset, size)
	}
	if _, err := cs.Info(t.Context(), desc.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("blob stored after a killed fetch: %v", err)
	}

	t.Logf("partial ingest: %d of %d bytes", st.Offset, size)
	// keeld restarts the plugin; the second fetch resumes.
	eventually(t, 30*time.Second, "resolver plugin restarted", func() error {
		p := k.plugins()["resolver.docker"]
		if p.Pid == pid || p.State != "running" || p.Restarts < 1 {
			return fmt.Errorf("pid %d, state %s, %d restarts", p.Pid, p.State, p.Restarts)
		}
		return nil
	})
	proxy.Release()
	res, err := c.Fetch(t.Context(), ref, desc)
	if err != nil {
		t.Fatalf("second fetch: %v", err)
	}
	if res.ResumedFrom != st.Offset {
		t.Errorf("second fetch resumed from %d, want %d (the partial ingest)", res.ResumedFrom, st.Offset)
	}
	if starts := proxy.startsAfterRelease(); len(starts) == 0 || slices.Min(starts) != st.Offset {
		t.Errorf("second fetch asked the registry from %v, want from %d (nothing before)", starts, st.Offset)
	}
	info, err := cs.Info(t.Context(), desc.Digest)
	if err != nil || info.Size != size {
		t.Fatalf("blob after the resumed fetch: %+v, %v", info, err)
	}
	ra, err := cs.ReaderAt(t.Context(), desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	dg := digest.Canonical.Digester()
	if _, err := io.Copy(dg.Hash(), io.NewSectionReader(ra, 0, ra.Size())); err != nil {
		t.Fatal(err)
	}
	if dg.Digest() != desc.Digest {
		t.Errorf("stored blob has digest %s, want %s", dg.Digest(), desc.Digest)
	}
	if _, err := cs.Status(t.Context(), ingestRef(desc)); !errdefs.IsNotFound(err) {
		t.Errorf("ingest left after the commit: %v", err)
	}
	// Fetched again: stored already, nothing asked.
	before := len(proxy.startsAfterRelease())
	if res, err := c.Fetch(t.Context(), ref, desc); err != nil || res.ResumedFrom != 0 {
		t.Errorf("fetch of a stored blob: %+v, %v", res, err)
	}
	if n := len(proxy.startsAfterRelease()); n != before {
		t.Errorf("fetch of a stored blob asked the registry %d times", n-before)
	}
}

// ingestRef is the content ingest keeld fetches desc into (as
// core/images.IngestRef names it).
func ingestRef(desc ocispec.Descriptor) string { return "fetch-" + desc.Digest.String() }

// keeld's API writes no file an API caller names: its resolver service
// refuses FetchToFile (keeld alone hands the resolver a file, the content
// store's ingest file), and the file stays as it was.
func TestResolverServiceRefusesFetchToFile(t *testing.T) {
	t.Parallel()
	k := startPullKeeld(t, plainHTTP("127.0.0.1:1"))
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	ff, ok := k.client(t, "default").ResolverService("").(resolver.FileFetcher)
	if !ok {
		t.Fatal("the resolver service client is no resolver.FileFetcher")
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("x"), Size: 1}
	err := ff.FetchToFile(t.Context(), "127.0.0.1:1/a/b:c", desc, 0, victim, func(int64) error { return nil })
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("FetchToFile through keeld's API: %v, want NotImplemented", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("the file now holds %q", got)
	}
}
