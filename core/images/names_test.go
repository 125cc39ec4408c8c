package images

import (
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestLookup: names as a user types them find the records pull made under
// their normalized names; exact names win; a digest finds its repository's
// record whatever its tag.
func TestLookup(t *testing.T) {
	ctx, s := newStore(t)
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	target := func(d digest.Digest) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: 3}
	}
	for _, img := range []metadata.Image{
		{Name: "docker.io/library/busybox:latest", Target: target(d1)},
		{Name: "127.0.0.1:5000/demo/busybox:v1", Target: target(d2)},
		{Name: "docker.io/library/alpine:3", Target: target(d1)},
		{Name: "localname:exact", Target: target(d2)}, // recorded as typed (e.g. by a Go client)
		{Name: "import@" + d2.String(), Target: target(d2)},
	} {
		if _, err := s.db.Images().Create(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ typed, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:latest", "docker.io/library/busybox:latest"},
		{"library/busybox", "docker.io/library/busybox:latest"},
		{"docker.io/busybox", "docker.io/library/busybox:latest"},
		{"docker.io/library/busybox:latest", "docker.io/library/busybox:latest"},
		{"busybox@" + d1.String(), "docker.io/library/busybox:latest"},
		{"alpine@" + d1.String(), "docker.io/library/alpine:3"},
		{"127.0.0.1:5000/demo/busybox:v1", "127.0.0.1:5000/demo/busybox:v1"},
		{"127.0.0.1:5000/demo/busybox@" + d2.String(), "127.0.0.1:5000/demo/busybox:v1"},
		{"localname:exact", "localname:exact"},
		{"import@" + d2.String(), "import@" + d2.String()},
	}
	for _, tt := range tests {
		img, err := Lookup(ctx, s.db.Images(), tt.typed)
		if err != nil || img.Name != tt.want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.typed, img.Name, err, tt.want)
		}
	}
	for _, typed := range []string{
		"busybox:v1",                   // no such tag
		"busybox@" + d2.String(),       // busybox's digest is d1
		"127.0.0.1:5000/demo/busybox",  // :latest is not v1
		"BadName",                      // not a reference, not a record
		"other/busybox@" + d1.String(), // another repository
	} {
		if img, err := Lookup(ctx, s.db.Images(), typed); !errdefs.IsNotFound(err) {
			t.Errorf("Lookup(%q) = %q, %v; want NotFound", typed, img.Name, err)
		}
	}
	for in, want := range map[string]string{
		"busybox":              "docker.io/library/busybox:latest",
		"localhost:5000/x":     "localhost:5000/x:latest",
		"import@sha256:abc":    "import@sha256:abc", // not a reference: as it is
		"foo_bar.com/x":        "foo_bar.com/x",     // no registry host: not a reference
		"example.com/UPPER:v1": "example.com/UPPER:v1",
	} {
		if n := NormalizeName(in); n != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, n, want)
		}
	}
}
