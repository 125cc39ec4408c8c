package docker

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// TestCallCredentials: a call's credentials log in to the reference's
// registry, over a config without any, and are never sent to a mirror
// (one that challenges for a login gets none); the resolver announces
// the capability.
func TestCallCredentials(t *testing.T) {
	reg := startRegistry(t, registry.Options{Auth: registry.Basic})
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.PushImage(t.Context(), "creds/img", "v1", img); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var mirrorAuth []string
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		mirrorAuth = append(mirrorAuth, req.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="mirror"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(mirror.Close)
	r := newResolver(t, map[string]any{"retries": 0, "host": map[string]any{reg.Host: map[string]any{
		"plain_http": true, "mirror": map[string]any{mirror.URL: map[string]any{"plain_http": true}},
	}}})
	var _ resolver.CallCredentialsTaker = r
	ref := reg.Host + "/creds/img:v1"

	if _, _, err := r.Resolve(t.Context(), ref); !errdefs.IsPermissionDenied(err) {
		t.Errorf("without credentials: %v, want PermissionDenied", err)
	}
	ctx := resolver.WithCredentials(t.Context(), resolver.Credentials{Username: reg.Username, Secret: reg.Password})
	_, desc, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("with the call's credentials: %v", err)
	}
	if desc.Digest != img.Manifest.Desc.Digest {
		t.Errorf("resolved %s, want %s", desc.Digest, img.Manifest.Desc.Digest)
	}
	rc, err := r.Fetch(ctx, ref, img.Config.Desc, 0)
	if err != nil {
		t.Fatalf("fetch with the call's credentials: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != string(img.Config.Data) {
		t.Errorf("fetched config: %v, differs: %v", err, string(got) != string(img.Config.Data))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(mirrorAuth) == 0 {
		t.Fatal("the mirror was never asked")
	}
	login := "Basic " + base64.StdEncoding.EncodeToString([]byte(reg.Username+":"+reg.Password))
	for _, a := range mirrorAuth {
		if a == login {
			t.Errorf("the mirror got the call's login")
		}
	}
}
