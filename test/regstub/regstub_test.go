package regstub

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func get(t *testing.T, ctx context.Context, method, url, rng string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestServe(t *testing.T) {
	s := Start(t)
	l := NewLayer(Gzip(Tar(Dir("d/"), File("d/f", []byte("hello")))))
	img := Image{Layers: []Layer{l}}.Build()
	s.Push("a/b", "v1", img)
	blobURL := s.URL + "/v2/a/b/blobs/" + l.Blob.Desc.Digest.String()
	ctx := t.Context()

	cases := []struct {
		name, method, url, rng string
		status                 int
		body                   []byte
		wantErr                bool
	}{
		{"Ping", "GET", s.URL + "/v2/", "", 200, []byte{}, false},
		{"ManifestByTag", "GET", s.URL + "/v2/a/b/manifests/v1", "", 200, img.Manifest.Data, false},
		{"ManifestByDigest", "HEAD", s.URL + "/v2/a/b/manifests/" + img.Manifest.Desc.Digest.String(), "", 200, []byte{}, false},
		{"UnknownTag", "GET", s.URL + "/v2/a/b/manifests/v2", "", 404, nil, false},
		{"Blob", "GET", blobURL, "", 200, l.Blob.Data, false},
		{"Range", "GET", blobURL, "bytes=3-", 206, l.Blob.Data[3:], false},
		{"BoundedRange", "GET", blobURL, "bytes=2-4", 206, l.Blob.Data[2:5], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b, err := get(t, ctx, c.method, c.url, c.rng)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.body != nil && string(b) != string(c.body) {
				t.Errorf("body %q, want %q", b, c.body)
			}
		})
	}
	if resp, _, _ := get(t, ctx, "HEAD", s.URL+"/v2/a/b/manifests/v1", ""); resp.Header.Get("Docker-Content-Digest") != img.Manifest.Desc.Digest.String() || resp.Header.Get("Content-Type") != img.Manifest.Desc.MediaType {
		t.Errorf("HEAD manifest headers: %v", resp.Header)
	}
	if n := s.Gets(l.Blob.Desc.Digest); n != 3 {
		t.Errorf("Gets = %d, want 3", n)
	}
}

func TestBehaviour(t *testing.T) {
	s := Start(t)
	l := NewLayer(Tar(File("f", make([]byte, 8192))))
	s.Put("r", l.Blob)
	u := s.URL + "/v2/r/blobs/" + l.Blob.Desc.Digest.String()

	s.Behave(l.Blob.Desc.Digest, Behaviour{Body: []byte("other")})
	if _, b, err := get(t, t.Context(), "GET", u, ""); err != nil || digest.FromBytes(b) == l.Blob.Desc.Digest || string(b) != "other" {
		t.Errorf("wrong body: %q, %v", b, err)
	}

	s.Behave(l.Blob.Desc.Digest, Behaviour{CutAfter: 100})
	if _, b, err := get(t, t.Context(), "GET", u, ""); err == nil || len(b) != 100 {
		t.Errorf("cut body: %d bytes, %v (want 100 and an error)", len(b), err)
	}

	s.Behave(l.Blob.Desc.Digest, Behaviour{Drip: time.Hour, DripChunk: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := get(t, ctx, "GET", u, ""); err == nil {
		t.Error("a drip of an hour per byte answered")
	}

	s.Behave(l.Blob.Desc.Digest, Behaviour{Status: http.StatusServiceUnavailable})
	if resp, _, err := get(t, t.Context(), "GET", u, ""); err != nil || resp.StatusCode != 503 {
		t.Errorf("status: %v %v", resp, err)
	}
}

func TestGzipBomb(t *testing.T) {
	l := GzipBomb("zeros", 4<<20)
	if len(l.Blob.Data) > 64<<10 {
		t.Errorf("a bomb of 4 MiB takes %d bytes", len(l.Blob.Data))
	}
	if got := NewLayer(l.Blob.Data).DiffID; got != l.DiffID {
		t.Errorf("diff id %s, recomputed %s", l.DiffID, got)
	}
}
