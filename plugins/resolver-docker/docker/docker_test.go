package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/testkit"
)

func TestParseRef(t *testing.T) {
	d := digest.FromString("x")
	tests := []struct {
		in, name, registry, repo, object string
	}{
		{"busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest"},
		{"user/app:1", "docker.io/user/app:1", "docker.io", "user/app", "1"},
		{"127.0.0.1:5000/a/b:v2", "127.0.0.1:5000/a/b:v2", "127.0.0.1:5000", "a/b", "v2"},
		{"localhost/app", "localhost/app:latest", "localhost", "app", "latest"},
		{"example.com/app@" + d.String(), "example.com/app@" + d.String(), "example.com", "app", d.String()},
		{"example.com/app:v1@" + d.String(), "example.com/app:v1@" + d.String(), "example.com", "app", d.String()},
	}
	for _, tt := range tests {
		rf, err := parseRef(tt.in)
		if err != nil {
			t.Errorf("parseRef(%q): %v", tt.in, err)
			continue
		}
		if rf.String() != tt.name || rf.registry != tt.registry || rf.repo != tt.repo || rf.object() != tt.object {
			t.Errorf("parseRef(%q) = %s %s %s %s, want %s %s %s %s", tt.in, rf, rf.registry, rf.repo, rf.object(), tt.name, tt.registry, tt.repo, tt.object)
		}
	}
	for _, bad := range []string{"", "UPPER", "a:b:c", "app@sha256:zz", "-x", "foo_bar.com/x"} {
		if _, err := parseRef(bad); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("parseRef(%q): %v, want InvalidArgument quoting it", bad, err)
		}
	}
}

func startRegistry(t *testing.T, opts registry.Options) *registry.Registry {
	t.Helper()
	r, err := registry.Start(t, opts)
	if errors.Is(err, registry.ErrNoRegistry) {
		testkit.SkipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newResolver(t *testing.T, cfg map[string]any) *Resolver {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(t.Context(), sdk.Env{Config: raw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.(*Resolver)
}

func readAll(t *testing.T, r resolver.Resolver, ref string, desc ocispec.Descriptor, off int64) []byte {
	t.Helper()
	rc, err := r.Fetch(t.Context(), ref, desc, off)
	if err != nil {
		t.Fatalf("Fetch(%s): %v", desc.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", desc.Digest, err)
	}
	return b
}

// TestVariants: TLS with the test's CA, Basic and token auth, each with a
// blob pushed in chunks and fetched back in parallel ranges, and from an
// offset. Parts and chunks are small so a small blob (3 chunks, 8 parts,
// the last one short) takes those paths: the size itself is not what is
// tested, and big blobs make the package slow under -race.
func TestVariants(t *testing.T) {
	for name, opts := range registry.Variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := startRegistry(t, opts)
			r := newResolver(t, map[string]any{
				"host":       map[string]any{reg.Host: reg.HostConfig()},
				"part_size":  64 << 10,
				"chunk_size": 192 << 10,
			})
			ctx := t.Context()
			ref := reg.Host + "/variants/big:v1"
			data := make([]byte, 7*64<<10+123)
			rand.Read(data)
			desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
			if err := r.Push(ctx, ref, desc, bytes.NewReader(data)); err != nil {
				t.Fatalf("push: %v", err)
			}
			if err := r.Push(ctx, ref, desc, bytes.NewReader(data)); !errdefs.IsAlreadyExists(err) {
				t.Fatalf("second push: %v, want AlreadyExists", err)
			}
			if got := readAll(t, r, ref, desc, 0); !bytes.Equal(got, data) {
				t.Fatalf("parallel fetch: %d bytes differ", len(got))
			}
			if got := readAll(t, r, ref, desc, 5*64<<10+7); !bytes.Equal(got, data[5*64<<10+7:]) {
				t.Fatalf("fetch from offset differs")
			}
			// Cross-repository mount: the blob is known in variants/big.
			other := reg.Host + "/variants/other:v1"
			if err := r.Push(ctx, other, desc, bytes.NewReader(data)); !errdefs.IsAlreadyExists(err) {
				t.Fatalf("push to another repository: %v, want AlreadyExists (mounted)", err)
			}
			if got, err := reg.GetBlob(ctx, "variants/other", desc.Digest); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("mounted blob: %v", err)
			}
			if opts.Auth == registry.Token && reg.TokenRequests() == 0 {
				t.Errorf("no token was asked for")
			}
		})
	}
}

// TestTokenCached: tokens are fetched once per scope, and a refused one
// (the registry restarted with another key would do; here it is dropped by
// hand) is fetched anew on 401.
func TestTokenCached(t *testing.T) {
	reg := startRegistry(t, registry.Options{Auth: registry.Token})
	img, err := registry.BuildImage(registry.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "tok/img", "v1", img); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, map[string]any{"host": map[string]any{reg.Host: reg.HostConfig()}})
	ref := reg.Host + "/tok/img:v1"
	before := reg.TokenRequests()
	for range 3 {
		if _, _, err := r.Resolve(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.TokenRequests() - before; n != 1 {
		t.Errorf("%d tokens for 3 resolves of one scope, want 1", n)
	}
	// Spoil the cached token: the 401 gets a fresh one.
	r.auth.mu.Lock()
	for k := range r.auth.tokens[reg.Host] {
		r.auth.tokens[reg.Host][k] = token{value: "spoilt", expires: time.Now().Add(time.Hour)}
	}
	r.auth.mu.Unlock()
	if _, _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Fatalf("resolve with a refused token: %v", err)
	}
	// Wrong credentials are refused by the token server.
	bad := reg.HostConfig()
	bad["password"] = "nope"
	r2 := newResolver(t, map[string]any{"host": map[string]any{reg.Host: bad}})
	if _, _, err := r2.Resolve(t.Context(), ref); !errdefs.IsPermissionDenied(err) {
		t.Errorf("resolve with a wrong password: %v, want PermissionDenied", err)
	}
}

// TestCredentialSources: Docker config.json auths, and a credential helper
// on PATH.
func TestCredentialSources(t *testing.T) {
	reg := startRegistry(t, registry.Options{Auth: registry.Basic})
	img, err := registry.BuildImage(registry.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "creds/img", "v1", img); err != nil {
		t.Fatal(err)
	}
	ref := reg.Host + "/creds/img:v1"
	dir := t.TempDir()

	cfgFile := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
	os.WriteFile(cfgFile, []byte(`{"auths":{"`+reg.Host+`":{"auth":"`+auth+`"}}}`), 0o600)
	r := newResolver(t, map[string]any{"docker_config": cfgFile, "host": map[string]any{reg.Host: map[string]any{"plain_http": true}}})
	if _, _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Errorf("with docker config auths: %v", err)
	}

	helper := filepath.Join(dir, "docker-credential-keeltest")
	script := fmt.Sprintf("#!/bin/sh\nread host\n[ \"$host\" = %q ] || { echo 'credentials not found'; exit 1; }\necho '{\"Username\":%q,\"Secret\":%q}'\n", reg.Host, reg.Username, reg.Password)
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	r = newResolver(t, map[string]any{"host": map[string]any{reg.Host: map[string]any{"plain_http": true, "credential_helper": "keeltest"}}})
	if _, _, err := r.Resolve(t.Context(), ref); err != nil {
		t.Errorf("with a credential helper: %v", err)
	}
}

// TestHostsAndErrors: fallback = false, explain, the manifest size limit,
// retries honouring Retry-After, a stalled download resumed, and errors
// naming host, reference and status.
func TestHostsAndErrors(t *testing.T) {
	blob := make([]byte, 256<<10)
	rand.Read(blob)
	bd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	var busy, stalls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/big"):
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromString("x").String())
			w.Header().Set("Content-Length", fmt.Sprint(5<<20))
		case strings.Contains(r.URL.Path, "/manifests/busy"):
			if busy.Add(1) == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		case strings.Contains(r.URL.Path, "/blobs/"):
			// The first answer sends half, then hangs.
			if r.Header.Get("Range") == "" && stalls.Add(1) == 1 {
				w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
				w.Write(blob[:len(blob)/2])
				w.(http.Flusher).Flush()
				<-r.Context().Done()
				return
			}
			var start int
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
			w.Header().Set("Content-Length", fmt.Sprint(len(blob)-start))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob[start:])
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	r := newResolver(t, map[string]any{
		"host": map[string]any{
			host:            map[string]any{"plain_http": true},
			"nowhere.local": map[string]any{"mirrors": []string{"http://" + host + "/v2/prefix"}, "fallback": false},
		},
		"stall_timeout": "300ms",
	})
	ctx := t.Context()

	_, _, err := r.Resolve(ctx, host+"/app:big")
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized manifest: %v", err)
	}
	start := time.Now()
	_, _, err = r.Resolve(ctx, host+"/app:busy")
	if !errdefs.IsNotFound(err) || time.Since(start) < 900*time.Millisecond {
		t.Errorf("503 with Retry-After 1 then 404: %v after %s", err, time.Since(start))
	}
	for _, part := range []string{host, "app:busy", "404"} {
		if err == nil || !strings.Contains(err.Error(), part) {
			t.Errorf("error %v does not name %q", err, part)
		}
	}
	if got := readAll(t, r, host+"/app:x", bd, 0); !bytes.Equal(got, blob) {
		t.Errorf("stalled then resumed fetch: %d bytes differ", len(got))
	}

	_, _, attempts, err := r.ResolveExplain(ctx, "nowhere.local/app:busy")
	if err == nil || len(attempts) != 2 || attempts[0].Role != "mirror" || !strings.Contains(attempts[0].Host, "/v2/prefix/") || !strings.Contains(attempts[1].Reason, "fallback = false") {
		t.Errorf("explain with fallback = false: %+v, %v", attempts, err)
	}
}

func TestConfigRefused(t *testing.T) {
	for _, cfg := range []string{`{"nope": 1}`, `{"timeout": "soon"}`, `{"host": {"x": {"mirror": {"ftp://m": {}}}}}`} {
		if _, err := New(context.Background(), sdk.Env{Config: json.RawMessage(cfg)}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("config %s: %v, want InvalidArgument", cfg, err)
		}
	}
}

// TestLoopbackIsPlainHTTP: a registry on this machine that no host block
// names is reached over plain HTTP, as Docker and containerd do; others
// keep HTTPS.
func TestLoopbackIsPlainHTTP(t *testing.T) {
	for _, tc := range []struct {
		registry string
		plain    bool
	}{
		{"localhost:5000", true},
		{"127.0.0.1:5000", true},
		{"127.0.0.2", true},
		{"[::1]:5000", true},
		{"registry.example:5000", false},
		{"10.0.0.1:5000", false},
	} {
		if got := isLoopback(tc.registry); got != tc.plain {
			t.Errorf("isLoopback(%q) = %v, want %v", tc.registry, got, tc.plain)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", digest.FromString("{}").String())
		w.Header().Set("Content-Length", "2")
		if r.Method == http.MethodGet {
			w.Write([]byte("{}"))
		}
	}))
	t.Cleanup(srv.Close)
	r := newResolver(t, map[string]any{})
	if _, _, err := r.Resolve(t.Context(), strings.TrimPrefix(srv.URL, "http://")+"/app:tag"); err != nil {
		t.Errorf("resolve on an unlisted loopback registry: %v", err)
	}
}
