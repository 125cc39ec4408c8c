package resolvertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// Binary opens the resolver plugin executable at path as keeld
// does (see conformance.Binary).
func Binary(path string, opts ...conformance.Option) conformance.Opener[resolver.Resolver] {
	return conformance.Binary(path, sdk.KindResolver, wrapResolver, opts...)
}

// InProcess opens the resolver factory builds inside the test
// process, across gRPC (see conformance.InProcess).
func InProcess(factory resolver.Factory, opts ...conformance.Option) conformance.Opener[resolver.Resolver] {
	return conformance.InProcess(resolver.Plugin("conformance", "dev", factory), wrapResolver, opts...)
}

func wrapResolver(conn grpc.ClientConnInterface, _ string, stop func() error) resolver.Resolver {
	return &stoppingResolver{Resolver: resolver.NewClient(conn), stop: stop}
}

// stoppingResolver is the sdk client whose Close ends the plugin.
type stoppingResolver struct {
	resolver.Resolver
	stop func() error
}

var _ resolver.Resolver = (*stoppingResolver)(nil)

// FetchToFile reaches the plugin's FetchToFile; the plugin answers
// NotImplemented when it lacks the capability.
func (r *stoppingResolver) FetchToFile(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, path string, progress func(int64) error) error {
	return r.Resolver.(resolver.FileFetcher).FetchToFile(ctx, ref, desc, offset, path, progress)
}

func (r *stoppingResolver) Close() error {
	err := r.Resolver.Close()
	if serr := r.stop(); err == nil {
		err = serr
	}
	return err
}

// Run runs the resolver suite against the plugins open opens.
//
// The suite starts its own registries (Debian's docker-registry, see
// test/conformance/registry): an open one and one with Basic auth, seeded
// with busybox-static images, a loopback server that lies about what it
// serves, and a mirror address where nothing listens. It hands the plugin
// a config in the docker resolver's shape that reaches them (see
// conformance.SuiteConfig):
//
//	host "<open>"          { plain_http = true }
//	host "<basic>"         { plain_http = true, username = …, password = … }
//	host "localhost:<basic port>" { plain_http = true, username = …, password = "wrong" }
//	host "<liar>"          { plain_http = true }
//	host "localhost:<open port>"  { plain_http = true, mirrors = ["http://<dead>"] }
//
// A resolver with another config shape passes the cases that need none
// (ResolveInvalidReference) and fails the others. Without docker-registry
// the registry cases skip, or fail under KEEL_TEST_STRICT=1.
func Run(t conformance.T, open conformance.Opener[resolver.Resolver], opts ...conformance.Option) {
	t.Helper()
	o := conformance.NewOptions(opts)
	fx, err := startResolverFixture(t)
	if err != nil {
		t.Logf("resolver fixture: %v", err)
	}
	if fx != nil {
		o.CaseConfig = fx.config
	}
	conformance.RunCases(t, resolverCases(fx, err), open, o)
}

// resolverFixture is what the suite starts once and every case reads.
type resolverFixture struct {
	open, basic *registry.Registry
	liar        string // host:port of the lying server
	dead        string // host:port where nothing listens
	config      json.RawMessage

	// Seeded content: an OCI image (gzip), a Docker multi-platform list
	// (amd64 gzip, arm64 zstd) and an OCI index.
	image        *registry.Image
	dockerImages []*registry.Image
	dockerList   registry.Blob
	ociIndex     registry.Blob
	// liarManifest is what the liar claims to serve.
	liarManifest ocispec.Descriptor
	liarBlob     ocispec.Descriptor
}

const (
	repoImage = "conformance/busybox"
	repoMulti = "conformance/multi"
)

func startResolverFixture(t conformance.T) (*resolverFixture, error) {
	fx := &resolverFixture{}
	var err error
	if fx.open, err = registry.Start(t, registry.Options{}); err != nil {
		return nil, err
	}
	if fx.basic, err = registry.Start(t, registry.Options{Auth: registry.Basic}); err != nil {
		return nil, err
	}
	ctx := t.Context()
	if fx.image, err = registry.BuildImage(registry.ImageOptions{}); err != nil {
		return nil, err
	}
	amd, err := registry.BuildImage(registry.ImageOptions{Docker: true})
	if err != nil {
		return nil, err
	}
	arm, err := registry.BuildImage(registry.ImageOptions{Docker: true, Zstd: true, Arch: "arm64"})
	if err != nil {
		return nil, err
	}
	fx.dockerImages = []*registry.Image{amd, arm}
	if fx.dockerList, err = registry.BuildIndex(true, amd, arm); err != nil {
		return nil, err
	}
	ociArm, err := registry.BuildImage(registry.ImageOptions{Zstd: true, Arch: "arm64"})
	if err != nil {
		return nil, err
	}
	if fx.ociIndex, err = registry.BuildIndex(false, fx.image, ociArm); err != nil {
		return nil, err
	}
	for _, r := range []*registry.Registry{fx.open, fx.basic} {
		if err := r.PushImage(ctx, repoImage, "latest", fx.image); err != nil {
			return nil, err
		}
		if err := r.PushIndex(ctx, repoMulti, "docker", fx.dockerList, amd, arm); err != nil {
			return nil, err
		}
		if err := r.PushIndex(ctx, repoMulti, "oci", fx.ociIndex, fx.image, ociArm); err != nil {
			return nil, err
		}
	}
	if err := fx.startLiar(t); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fx.dead = l.Addr().String()
	l.Close()

	openPort := fx.open.Host[strings.LastIndex(fx.open.Host, ":")+1:]
	basicPort := fx.basic.Host[strings.LastIndex(fx.basic.Host, ":")+1:]
	badCreds := fx.basic.HostConfig()
	badCreds["password"] = "wrong"
	cfg := map[string]any{"host": map[string]any{
		fx.open.Host:             fx.open.HostConfig(),
		fx.basic.Host:            fx.basic.HostConfig(),
		"localhost:" + basicPort: badCreds,
		fx.liar:                  map[string]any{"plain_http": true},
		"localhost:" + openPort:  map[string]any{"plain_http": true, "mirrors": []string{"http://" + fx.dead}},
	}, "retries": 1, "timeout": "10s"}
	if fx.config, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	return fx, nil
}

// startLiar serves, for any repository, a manifest and a blob whose bytes
// are not those of the digests it names.
func (fx *resolverFixture) startLiar(t conformance.T) error {
	honest := fx.image.Manifest.Data
	lie := append(bytes.Clone(honest), ' ')
	fx.liarManifest = fx.image.Manifest.Desc
	fx.liarManifest.Platform = nil
	blob := make([]byte, 64<<10)
	rand.Read(blob)
	fx.liarBlob = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	other := make([]byte, len(blob))
	rand.Read(other)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fx.liar = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/manifests/"):
			// Claims the honest digest, sends other bytes.
			w.Header().Set("Content-Type", fx.liarManifest.MediaType)
			w.Header().Set("Docker-Content-Digest", fx.liarManifest.Digest.String())
			w.Header().Set("Content-Length", fmt.Sprint(len(lie)))
			if r.Method == http.MethodGet {
				w.Write(lie)
			}
		case strings.Contains(r.URL.Path, "/blobs/"):
			w.Header().Set("Content-Length", fmt.Sprint(len(other)))
			w.Write(other)
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return nil
}

func (fx *resolverFixture) ref(r *registry.Registry, repo, tag string) string {
	return r.Host + "/" + repo + ":" + tag
}

// resolverCase wraps a body that needs the fixture: without one it skips
// (or fails, strict).
func resolverCase(fx *resolverFixture, fxErr error, name string, body func(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture)) conformance.Case[resolver.Resolver] {
	return conformance.Case[resolver.Resolver]{Name: name, Body: func(ctx context.Context, t conformance.T, env *conformance.Env[resolver.Resolver]) {
		if fx == nil {
			if errors.Is(fxErr, registry.ErrNoRegistry) {
				testkit.SkipOrFail(t, "%v", fxErr)
			}
			t.Fatalf("resolver fixture: %v", fxErr)
		}
		body(ctx, t, env.P, fx)
	}}
}

func resolverCases(fx *resolverFixture, fxErr error) []conformance.Case[resolver.Resolver] {
	return []conformance.Case[resolver.Resolver]{
		{Name: "ResolveInvalidReference", Body: func(ctx context.Context, t conformance.T, env *conformance.Env[resolver.Resolver]) {
			for _, ref := range []string{"UPPER/Case::bad", "", "example.com/app@sha256:nothex"} {
				_, _, err := env.P.Resolve(ctx, ref)
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("Resolve(%q): %v, want InvalidArgument", ref, err)
				} else if ref != "" && !strings.Contains(err.Error(), ref) {
					t.Errorf("Resolve(%q): %v does not quote the reference", ref, err)
				}
			}
		}},
		resolverCase(fx, fxErr, "ResolveTag", resolveTag),
		resolverCase(fx, fxErr, "ResolveDigest", resolveDigest),
		resolverCase(fx, fxErr, "ResolveIndexes", resolveIndexes),
		resolverCase(fx, fxErr, "FetchImage", fetchImage),
		resolverCase(fx, fxErr, "FetchOffset", fetchOffset),
		resolverCase(fx, fxErr, "PushPullBack", pushPullBack),
		resolverCase(fx, fxErr, "MissingTagNotFound", missingTag),
		resolverCase(fx, fxErr, "BasicAuth", basicAuth),
		resolverCase(fx, fxErr, "BadCredentials", badCredentials),
		resolverCase(fx, fxErr, "LyingRegistryRefused", lyingRegistry),
		resolverCase(fx, fxErr, "MirrorDownFallback", mirrorFallback),
		needs(resolverCase(fx, fxErr, "FetchToFile", fetchToFile), resolver.CapabilityFetchToFile),
	}
}

func needs[P any](c conformance.Case[P], caps ...string) conformance.Case[P] {
	c.Needs = caps
	return c
}

// fetchToFile: a resolver with the capability "fetch-to-file" writes each
// blob into an existing file at its offsets, from any offset, reporting
// progress up to the size; it makes no file and follows no link.
func fetchToFile(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	ff, ok := r.(resolver.FileFetcher)
	if !ok {
		t.Fatalf("%T announces %q but is no resolver.FileFetcher", r, resolver.CapabilityFetchToFile)
	}
	ref := fx.ref(fx.open, repoImage, "latest")
	dir, err := os.MkdirTemp("", "keel-fetch-to-file-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	blobs := append([]registry.Blob{fx.image.Manifest}, fx.image.Blobs()...)
	for i, b := range blobs {
		for _, from := range []int64{0, b.Desc.Size / 2} {
			path := filepath.Join(dir, fmt.Sprintf("blob-%d-%d", i, from))
			if err := os.WriteFile(path, b.Data[:from], 0o600); err != nil {
				t.Fatalf("%v", err)
			}
			last := from
			err := ff.FetchToFile(ctx, ref, b.Desc, from, path, func(offset int64) error {
				if offset <= last || offset > b.Desc.Size {
					t.Errorf("%s from %d: progress %d after %d", b.Desc.Digest, from, offset, last)
				}
				last = offset
				return nil
			})
			if err != nil {
				t.Fatalf("FetchToFile(%s from %d): %v", b.Desc.Digest, from, err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, b.Data) {
				t.Errorf("FetchToFile(%s from %d): the file holds %d bytes that differ from the %d pushed", b.Desc.Digest, from, len(got), len(b.Data))
			}
			if from < b.Desc.Size && last != b.Desc.Size {
				t.Errorf("FetchToFile(%s from %d): progress ended at %d of %d", b.Desc.Digest, from, last, b.Desc.Size)
			}
		}
	}
	layer := fx.image.Layers[0]
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatalf("%v", err)
	}
	noop := func(int64) error { return nil }
	if err := ff.FetchToFile(ctx, ref, layer.Desc, 0, link, noop); err == nil {
		t.Errorf("FetchToFile into a symbolic link succeeded")
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("FetchToFile through a symbolic link wrote its target: %q", got)
	}
	absent := filepath.Join(dir, "absent")
	if err := ff.FetchToFile(ctx, ref, layer.Desc, 0, absent, noop); err == nil {
		t.Errorf("FetchToFile into a missing file succeeded")
	}
	if _, err := os.Lstat(absent); err == nil {
		t.Errorf("FetchToFile made the file it was given")
	}
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("no such blob"), Size: 12}
	if err := ff.FetchToFile(ctx, ref, missing, 0, victim, noop); !errdefs.IsNotFound(err) {
		t.Errorf("FetchToFile of a missing blob: %v, want NotFound", err)
	}
}

// sameDesc checks the parts of a resolved descriptor that matter.
func sameDesc(t conformance.T, what string, got, want ocispec.Descriptor) {
	t.Helper()
	if got.Digest != want.Digest || got.Size != want.Size || got.MediaType != want.MediaType {
		t.Errorf("%s: resolved %s %s (%d bytes), want %s %s (%d bytes)", what, got.MediaType, got.Digest, got.Size, want.MediaType, want.Digest, want.Size)
	}
}

func resolveTag(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	ref := fx.ref(fx.open, repoImage, "latest")
	name, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", ref, err)
	}
	if name != ref {
		t.Errorf("Resolve(%q) named it %q", ref, name)
	}
	sameDesc(t, ref, desc, fx.image.Manifest.Desc)
	// No tag means latest.
	bare := fx.open.Host + "/" + repoImage
	if name, desc, err := r.Resolve(ctx, bare); err != nil || name != ref {
		t.Errorf("Resolve(%q): %q, %v; want %q", bare, name, err, ref)
	} else {
		sameDesc(t, bare, desc, fx.image.Manifest.Desc)
	}
}

func resolveDigest(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	d := fx.image.Manifest.Desc.Digest
	for _, ref := range []string{
		fx.open.Host + "/" + repoImage + "@" + d.String(),
		fx.ref(fx.open, repoImage, "latest") + "@" + d.String(),
	} {
		name, desc, err := r.Resolve(ctx, ref)
		if err != nil {
			t.Errorf("Resolve(%q): %v", ref, err)
			continue
		}
		if !strings.HasSuffix(name, "@"+d.String()) {
			t.Errorf("Resolve(%q) named it %q, without the digest", ref, name)
		}
		sameDesc(t, ref, desc, fx.image.Manifest.Desc)
	}
	missing := fx.open.Host + "/" + repoImage + "@" + digest.FromString("nothing").String()
	if _, _, err := r.Resolve(ctx, missing); !errdefs.IsNotFound(err) {
		t.Errorf("Resolve(%q): %v, want NotFound", missing, err)
	}
}

func resolveIndexes(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	for tag, want := range map[string]registry.Blob{"docker": fx.dockerList, "oci": fx.ociIndex} {
		ref := fx.ref(fx.open, repoMulti, tag)
		_, desc, err := r.Resolve(ctx, ref)
		if err != nil {
			t.Errorf("Resolve(%q): %v", ref, err)
			continue
		}
		sameDesc(t, ref, desc, want.Desc)
		got := fetchAll(ctx, t, r, ref, desc, 0)
		if !bytes.Equal(got, want.Data) {
			t.Errorf("Fetch(%s) of %s: %d bytes differ from the index pushed", desc.Digest, ref, len(got))
		}
	}
	// A Docker arm64 image with zstd layers, by digest from the list.
	arm := fx.dockerImages[1]
	ref := fx.ref(fx.open, repoMulti, "docker")
	for _, b := range append([]registry.Blob{arm.Manifest}, arm.Blobs()...) {
		if got := fetchAll(ctx, t, r, ref, b.Desc, 0); !bytes.Equal(got, b.Data) {
			t.Errorf("Fetch(%s %s): %d bytes differ from the %d pushed", b.Desc.MediaType, b.Desc.Digest, len(got), len(b.Data))
		}
	}
}

// fetchAll reads desc of ref from offset on.
func fetchAll(ctx context.Context, t conformance.T, r resolver.Resolver, ref string, desc ocispec.Descriptor, offset int64) []byte {
	t.Helper()
	rc, err := r.Fetch(ctx, ref, desc, offset)
	if err != nil {
		t.Fatalf("Fetch(%s, %s, %d): %v", ref, desc.Digest, offset, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s of %s from %d: %v", desc.Digest, ref, offset, err)
	}
	return b
}

func fetchImage(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	ref := fx.ref(fx.open, repoImage, "latest")
	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", ref, err)
	}
	if got := fetchAll(ctx, t, r, ref, desc, 0); !bytes.Equal(got, fx.image.Manifest.Data) {
		t.Fatalf("manifest: %d bytes differ from the %d pushed", len(got), len(fx.image.Manifest.Data))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(fx.image.Manifest.Data, &m); err != nil {
		t.Fatalf("%v", err)
	}
	for i, b := range fx.image.Blobs() {
		want := m.Config
		if i > 0 {
			want = m.Layers[i-1]
		}
		if got := fetchAll(ctx, t, r, ref, want, 0); !bytes.Equal(got, b.Data) {
			t.Errorf("Fetch(%s %s): %d bytes differ from the %d pushed", want.MediaType, want.Digest, len(got), len(b.Data))
		}
	}
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("no such blob"), Size: 12}
	if rc, err := r.Fetch(ctx, ref, missing, 0); !errdefs.IsNotFound(err) {
		if rc != nil {
			rc.Close()
		}
		t.Errorf("Fetch of a missing blob: %v, want NotFound", err)
	}
}

func fetchOffset(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	ref := fx.ref(fx.open, repoImage, "latest")
	layer := fx.image.Layers[0]
	for _, off := range []int64{1, layer.Desc.Size / 2, layer.Desc.Size - 1, layer.Desc.Size} {
		if got := fetchAll(ctx, t, r, ref, layer.Desc, off); !bytes.Equal(got, layer.Data[off:]) {
			t.Errorf("Fetch from %d of %d: %d bytes differ from the %d expected", off, layer.Desc.Size, len(got), layer.Desc.Size-off)
		}
	}
	// Manifests too.
	m := fx.image.Manifest
	if got := fetchAll(ctx, t, r, ref, m.Desc, 10); !bytes.Equal(got, m.Data[10:]) {
		t.Errorf("manifest from offset 10: %d bytes differ", len(got))
	}
	for _, off := range []int64{-1, layer.Desc.Size + 1} {
		if rc, err := r.Fetch(ctx, ref, layer.Desc, off); !errdefs.IsInvalidArgument(err) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Fetch from %d of %d: %v, want InvalidArgument", off, layer.Desc.Size, err)
		}
	}
}

func pushPullBack(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	// Each run its own repository: the registry outlives a case.
	var suffix [4]byte
	rand.Read(suffix[:])
	ref := fmt.Sprintf("%s/conformance/pushed-%x:v1", fx.open.Host, suffix)
	img, err := registry.BuildImage(registry.ImageOptions{Extra: suffix[:]})
	if err != nil {
		t.Fatalf("%v", err)
	}
	// The busybox layer is in conformance/busybox already: a mount or an
	// AlreadyExists, never an error.
	for _, b := range img.Blobs() {
		if err := r.Push(ctx, ref, b.Desc, bytes.NewReader(b.Data)); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Push(%s %s): %v", b.Desc.MediaType, b.Desc.Digest, err)
		}
	}
	md := img.Manifest.Desc
	md.Platform = nil
	if err := r.Push(ctx, ref, md, bytes.NewReader(img.Manifest.Data)); err != nil {
		t.Fatalf("Push(manifest %s): %v", md.Digest, err)
	}
	// Pushed again: nothing re-sent.
	if err := r.Push(ctx, ref, img.Layers[1].Desc, bytes.NewReader(img.Layers[1].Data)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Push of a layer: %v, want AlreadyExists", err)
	}
	if err := r.Push(ctx, ref, md, bytes.NewReader(img.Manifest.Data)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Push of the manifest: %v, want AlreadyExists", err)
	}
	// A reader that differs from its descriptor is refused.
	bad := img.Layers[1].Desc
	bad.Digest = digest.FromString("other")
	if err := r.Push(ctx, ref, bad, bytes.NewReader(img.Layers[1].Data)); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Push of content not matching its digest: %v, want FailedPrecondition", err)
	}

	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q) after push: %v", ref, err)
	}
	sameDesc(t, ref, desc, md)
	if got := fetchAll(ctx, t, r, ref, desc, 0); !bytes.Equal(got, img.Manifest.Data) {
		t.Errorf("manifest pulled back differs")
	}
	for _, b := range img.Blobs() {
		if got := fetchAll(ctx, t, r, ref, b.Desc, 0); !bytes.Equal(got, b.Data) {
			t.Errorf("blob %s pulled back: %d bytes differ from the %d pushed", b.Desc.Digest, len(got), len(b.Data))
		}
	}
	// By digest too.
	byDigest := strings.TrimSuffix(ref, ":v1") + "@" + md.Digest.String()
	if err := r.Push(ctx, byDigest, md, bytes.NewReader(img.Manifest.Data)); err != nil && !errdefs.IsAlreadyExists(err) {
		t.Errorf("Push(%s): %v", byDigest, err)
	}
}

func missingTag(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	for _, ref := range []string{fx.ref(fx.open, repoImage, "no-such-tag"), fx.ref(fx.open, "conformance/no-such-repo", "latest")} {
		_, _, err := r.Resolve(ctx, ref)
		if !errdefs.IsNotFound(err) {
			t.Errorf("Resolve(%q): %v, want NotFound", ref, err)
		}
	}
}

func basicAuth(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	ref := fx.ref(fx.basic, repoImage, "latest")
	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q) with good credentials: %v", ref, err)
	}
	sameDesc(t, ref, desc, fx.image.Manifest.Desc)
	layer := fx.image.Layers[0]
	if got := fetchAll(ctx, t, r, ref, layer.Desc, 0); !bytes.Equal(got, layer.Data) {
		t.Errorf("layer through Basic auth differs")
	}
}

func badCredentials(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	port := fx.basic.Host[strings.LastIndex(fx.basic.Host, ":")+1:]
	ref := "localhost:" + port + "/" + repoImage + ":latest"
	_, _, err := r.Resolve(ctx, ref)
	if !errdefs.IsPermissionDenied(err) {
		t.Fatalf("Resolve(%q) with a wrong password: %v, want PermissionDenied", ref, err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the password: %v", err)
	}
	layer := fx.image.Layers[0]
	if err := r.Push(ctx, ref, layer.Desc, bytes.NewReader(layer.Data)); !errdefs.IsPermissionDenied(err) {
		t.Errorf("Push with a wrong password: %v, want PermissionDenied", err)
	}
}

func lyingRegistry(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	byDigest := fx.liar + "/lies@" + fx.liarManifest.Digest.String()
	if _, desc, err := r.Resolve(ctx, byDigest); err == nil {
		// A resolver may trust the HEAD; the bytes must still be refused.
		if rc, err := r.Fetch(ctx, byDigest, desc, 0); err == nil {
			b, err := io.ReadAll(rc)
			rc.Close()
			if err == nil {
				t.Errorf("Fetch of a manifest whose bytes do not match %s returned %d bytes and no error", desc.Digest, len(b))
			}
		}
	}
	ref := fx.liar + "/lies:latest"
	if rc, err := r.Fetch(ctx, ref, fx.liarManifest, 0); err == nil {
		b, err := io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Errorf("Fetch of a lying manifest returned %d bytes and no error", len(b))
		}
	}
	rc, err := r.Fetch(ctx, ref, fx.liarBlob, 0)
	if err != nil {
		return
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err == nil {
		t.Errorf("Fetch of a blob whose bytes do not match %s returned %d bytes and no error", fx.liarBlob.Digest, len(b))
	}
}

func mirrorFallback(ctx context.Context, t conformance.T, r resolver.Resolver, fx *resolverFixture) {
	port := fx.open.Host[strings.LastIndex(fx.open.Host, ":")+1:]
	ref := "localhost:" + port + "/" + repoImage + ":latest"
	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%q) with its mirror %s down: %v", ref, fx.dead, err)
	}
	sameDesc(t, ref, desc, fx.image.Manifest.Desc)
	layer := fx.image.Layers[0]
	if got := fetchAll(ctx, t, r, ref, layer.Desc, 0); !bytes.Equal(got, layer.Data) {
		t.Errorf("layer with the mirror down differs")
	}
	if _, _, attempts, err := resolver.Explain(ctx, r, ref); err == nil && len(attempts) > 0 {
		if len(attempts) != 2 || attempts[0].Used || !attempts[1].Used {
			t.Errorf("explain: %+v, want the mirror failed then the upstream used", attempts)
		}
	}
}

var _ resolver.Explainer = (*stoppingResolver)(nil)

// ResolveExplain passes --explain through to the plugin.
func (r *stoppingResolver) ResolveExplain(ctx context.Context, ref string) (string, ocispec.Descriptor, []resolver.Attempt, error) {
	return resolver.Explain(ctx, r.Resolver, ref)
}
