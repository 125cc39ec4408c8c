package resolver

import (
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestParseReference(t *testing.T) {
	long := strings.Repeat("a", 256)
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	tests := []struct {
		in   string
		want string // the parsed name; "" when it is refused
		why  string // in the refusal
	}{
		{"busybox", "docker.io/library/busybox", ""},
		{"busybox:1.36", "docker.io/library/busybox:1.36", ""},
		{"library/busybox", "docker.io/library/busybox", ""},
		{"a_b/c", "docker.io/a_b/c", ""},
		{"example.com/app:v1", "example.com/app:v1", ""},
		{"example.com/a/b/c", "example.com/a/b/c", ""},
		{"localhost/x", "localhost/x", ""},
		{"localhost:5000/x:v1", "localhost:5000/x:v1", ""},
		{"127.0.0.1:5000/x", "127.0.0.1:5000/x", ""},
		{"[::1]:5000/x", "[::1]:5000/x", ""},
		{"Example.COM/x", "Example.COM/x", ""}, // host names are case-insensitive
		{"example.com/x@" + dgst, "example.com/x@" + dgst, ""},
		{"example.com/x:v1@" + dgst, "example.com/x:v1@" + dgst, ""},

		{"", "", ""},
		{"foo_bar.com/x", "", "no registry host"},
		{"foo_bar.com:5000/x", "", ""},
		{"[1]:5000/a/a", "", "not a host name or address"},
		{"example.com/X", "", "lowercase"},
		{"Busybox", "", "lowercase"},
		{"example.com/", "", ""},
		{"/x", "", ""},
		{"example.com//x", "", ""},
		{"example.com/x:", "", ""},
		{"example.com/x:-v1", "", ""},
		{"example.com/x:" + strings.Repeat("t", 129), "", ""},
		{"example.com/x@sha256:abc", "", "digest"},
		{"example.com/x@md5:" + strings.Repeat("0", 32), "", ""},
		{"example.com:port/x", "", ""},
		{"[::1/x", "", ""},
		{"example.com/" + long, "", "255"},
		{"x y", "", ""},
		{"example.com/x\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			named, err := ParseReference(tt.in)
			if tt.want != "" {
				if err != nil {
					t.Fatalf("ParseReference(%q): %v", tt.in, err)
				}
				if named.String() != tt.want {
					t.Fatalf("ParseReference(%q) = %s, want %s", tt.in, named, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseReference(%q) = %s, want it refused", tt.in, named)
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "invalid reference") {
				t.Fatalf("ParseReference(%q): %v, want InvalidArgument \"invalid reference\"", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("ParseReference(%q): %v does not say %q", tt.in, err, tt.why)
			}
		})
	}
}
