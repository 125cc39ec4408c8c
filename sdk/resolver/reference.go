package resolver

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/distribution/reference"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ParseReference parses an image reference as keel names images: the
// distribution/reference grammar with Docker Hub's defaults ("busybox" is
// docker.io/library/busybox), and always a registry host. A malformed
// reference is InvalidArgument, refused before any registry is asked.
//
// The grammar alone takes "foo_bar.com/x" as a two-component path with no
// host ('_' cannot be in a host name but can be in a path component); a
// name with no host could only fail later, at the registry, as "no Host in
// request URL", so it is refused here.
func ParseReference(s string) (reference.Named, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, fmt.Errorf("invalid reference %q: %v: %w", s, why(err), errdefs.ErrInvalidArgument)
	}
	if reference.Domain(named) == "" {
		return nil, fmt.Errorf("invalid reference %q: no registry host (a host name may not hold '_'): %w", s, errdefs.ErrInvalidArgument)
	}
	// The grammar takes any [hex and colons] as an IPv6 address ("[1]");
	// a host a URL cannot hold would fail only at the registry.
	if host := reference.Domain(named); !validURLHost(host) {
		return nil, fmt.Errorf("invalid reference %q: registry %q is not a host name or address: %w", s, host, errdefs.ErrInvalidArgument)
	}
	if d, ok := named.(reference.Digested); ok {
		if err := d.Digest().Validate(); err != nil {
			return nil, fmt.Errorf("invalid reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
		}
	}
	return named, nil
}

func validURLHost(host string) bool {
	u, err := url.Parse("https://" + host + "/")
	return err == nil && u.Host == host
}

// why is the library's error without its "invalid reference format"
// prefix, which the caller's message says already.
func why(err error) string {
	msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "invalid reference format"), ": ")
	if msg == "" {
		return "not [host[:port]/]path[:tag][@digest]"
	}
	return msg
}
