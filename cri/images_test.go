package cri

import (
	"encoding/base64"
	"slices"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

func TestNormalizeRef(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36"},
		{"library/busybox", "docker.io/library/busybox:latest"},
		{"quay.io/app/x", "quay.io/app/x:latest"},
		{"127.0.0.1:5000/e2e/busybox:v1", "127.0.0.1:5000/e2e/busybox:v1"},
		{"busybox@sha256:" + hex64('a'), "docker.io/library/busybox@sha256:" + hex64('a')},
	} {
		got, err := NormalizeRef(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("NormalizeRef(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "busybox:bad tag", "UPPER/case:x:y", "a@sha256:short"} {
		if _, err := NormalizeRef(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NormalizeRef(%q): %v, want InvalidArgument", bad, err)
		}
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

func TestImageUser(t *testing.T) {
	for _, tc := range []struct {
		user string
		uid  int64 // -1: none
		name string
	}{
		{"", -1, ""},
		{"0", 0, ""},
		{"1000:1000", 1000, ""},
		{"app", -1, "app"},
		{"app:staff", -1, "app"},
	} {
		uid, name := imageUser(tc.user)
		gotUID := int64(-1)
		if uid != nil {
			gotUID = uid.Value
		}
		if gotUID != tc.uid || name != tc.name {
			t.Errorf("imageUser(%q) = %d %q, want %d %q", tc.user, gotUID, name, tc.uid, tc.name)
		}
	}
}

func TestPullCredentials(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name string
		auth *runtimeapi.AuthConfig
		want resolver.Credentials
		err  func(error) bool
	}{
		{"none", nil, resolver.Credentials{}, nil},
		{"password", &runtimeapi.AuthConfig{Username: "u", Password: "p", ServerAddress: "r"}, resolver.Credentials{Username: "u", Secret: "p"}, nil},
		{"auth", &runtimeapi.AuthConfig{Auth: b64("u:p:q")}, resolver.Credentials{Username: "u", Secret: "p:q"}, nil},
		{"identity token", &runtimeapi.AuthConfig{IdentityToken: "tok"}, resolver.Credentials{IdentityToken: "tok"}, nil},
		{"auth not base64", &runtimeapi.AuthConfig{Auth: "%"}, resolver.Credentials{}, errdefs.IsInvalidArgument},
		{"auth without colon", &runtimeapi.AuthConfig{Auth: b64("u")}, resolver.Credentials{}, errdefs.IsInvalidArgument},
		{"registry token", &runtimeapi.AuthConfig{RegistryToken: "t"}, resolver.Credentials{}, errdefs.IsNotImplemented},
	} {
		got, err := pullCredentials(tc.auth)
		switch {
		case tc.err != nil && !tc.err(err):
			t.Errorf("%s: error %v", tc.name, err)
		case tc.err == nil && (err != nil || got != tc.want):
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// TestFindAndConvert: an image is found by name (normalized), id, its
// hex, or repo@digest of a record's target, and reports its tags and
// digests once each.
func TestFindAndConvert(t *testing.T) {
	manifest := digest.FromString("manifest")
	id := digest.FromString("config")
	other := criImage{facts: imageFacts{id: digest.FromString("other")}, records: []client.Image{{Name: "docker.io/library/other:1"}}}
	bb := criImage{
		facts: imageFacts{id: id, manifest: manifest, size: 42, user: "7"},
		records: []client.Image{
			{Name: "docker.io/library/busybox:1.36", Target: ocispec.Descriptor{Digest: manifest}},
			{Name: "docker.io/library/busybox:latest", Target: ocispec.Descriptor{Digest: manifest}},
		},
	}
	images := []criImage{other, bb}
	for _, ref := range []string{"busybox", "busybox:1.36", "docker.io/library/busybox:latest", id.String(), id.Encoded(), "busybox@" + manifest.String()} {
		if i, err := findImage(images, ref); err != nil || i != 1 {
			t.Errorf("findImage(%q) = %d, %v; want 1", ref, i, err)
		}
	}
	for _, ref := range []string{"busybox:2", "sha256:" + hex64('0'), "other@" + manifest.String()} {
		if i, err := findImage(images, ref); err != nil || i != -1 {
			t.Errorf("findImage(%q) = %d, %v; want -1", ref, i, err)
		}
	}
	if _, err := findImage(images, ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("findImage(\"\"): %v, want InvalidArgument", err)
	}
	got := bb.toCRI()
	if got.Id != id.String() || got.Size != 42 || got.Uid.GetValue() != 7 ||
		!slices.Equal(got.RepoTags, []string{"docker.io/library/busybox:1.36", "docker.io/library/busybox:latest"}) ||
		!slices.Equal(got.RepoDigests, []string{"docker.io/library/busybox@" + manifest.String()}) {
		t.Errorf("toCRI: %v", got)
	}
}
