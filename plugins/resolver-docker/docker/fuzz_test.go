package docker

import (
	"net/url"
	"testing"

	"github.com/containerd/containerd/v2/pkg/reference"
	digest "github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// FuzzParseRef: parseRef refuses with InvalidArgument or gives a
// reference whose registry is a URL host, with a repository and an object
// (tag or digest); its name parses back to the same reference; and
// containerd's reference parser (what its resolver reaches registries
// with) reads the name as the same host, repository and object.
func FuzzParseRef(f *testing.F) {
	d := digest.FromString("x").String()
	for _, s := range []string{
		"busybox", "user/app:1", "127.0.0.1:5000/a/b:v2", "localhost/app", "example.com/app@" + d,
		"example.com/app:v1@" + d, "[::1]:5000/app:v1", "", "UPPER", "a:b:c", "app@sha256:zz", "-x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rf, err := parseRef(s)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("parseRef(%q): %v, want InvalidArgument", s, err)
			}
			return
		}
		if rf.repo == "" || rf.object() == "" {
			t.Fatalf("parseRef(%q): repo %q, object %q", s, rf.repo, rf.object())
		}
		if u, err := url.Parse("https://" + rf.registry + "/v2/"); err != nil || u.Host != rf.registry || rf.registry == "" {
			t.Fatalf("parseRef(%q): registry %q is not a host (%v)", s, rf.registry, err)
		}
		again, err := parseRef(rf.String())
		if err != nil || again.String() != rf.String() || again.registry != rf.registry || again.repo != rf.repo || again.object() != rf.object() {
			t.Fatalf("parseRef(%q) = %s, which parses to %+v, %v", s, rf, again, err)
		}
		spec, err := reference.Parse(rf.String())
		if err != nil {
			t.Fatalf("parseRef(%q) = %s, which containerd refuses: %v", s, rf, err)
		}
		if spec.Hostname() != rf.registry || spec.Locator != rf.registry+"/"+rf.repo || spec.Digest() != rf.digest {
			t.Fatalf("parseRef(%q) = %s %s %s, containerd reads %s %s", s, rf.registry, rf.repo, rf.object(), spec.Locator, spec.Object)
		}
		if rf.digest == "" && spec.Object != rf.tag {
			t.Fatalf("parseRef(%q): tag %q, containerd reads %q", s, rf.tag, spec.Object)
		}
	})
}
