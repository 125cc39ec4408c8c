package images

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// MaxPlatformLength bounds a platform string ("os/arch/variant", with an
// os version and features at most a few dozen bytes).
const MaxPlatformLength = 128

// knownOS and knownArch are the values images use (Go's GOOS and GOARCH
// names, as the OCI image spec says).
var (
	knownOS   = []string{"aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js", "linux", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"}
	knownArch = []string{"386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le", "ppc64", "ppc64le", "riscv64", "s390x", "sparc64", "wasm"}
)

// variants are the variants a matcher falls back through (platforms.Only
// makes one candidate per lower variant, so an unbounded one sizes its
// work); other architectures take a short variant of their own.
var variants = map[string][]string{
	"amd64": {"v1", "v2", "v3", "v4"},
	"arm":   {"v5", "v6", "v7", "v8"},
	"arm64": {"v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9",
		"v9", "v9.0", "v9.1", "v9.2", "v9.3", "v9.4", "v9.5", "v9.6", "v9.7"},
}

var otherVariant = regexp.MustCompile(`^[a-z0-9.]{1,16}$`)

// ParsePlatform parses "os/arch[/variant]" into a matcher that takes the
// usual fallbacks (platforms.Only): arm64 matches arm64/v8, arm/v7 takes
// arm/v6 when there is no v7. The string is checked first (CheckPlatform),
// so no matcher is built for one that would size unbounded work.
func ParsePlatform(s string) (platforms.MatchComparer, error) {
	p, err := CheckPlatform(s)
	if err != nil {
		return nil, err
	}
	return platforms.Only(p), nil
}

// CheckPlatform parses s and refuses, with InvalidArgument, a string over
// MaxPlatformLength, an os or an architecture images do not use, and a
// variant outside its architecture's range (amd64 v1-v4, arm v5-v8, arm64
// v8-v9.7).
func CheckPlatform(s string) (ocispec.Platform, error) {
	if len(s) > MaxPlatformLength {
		return ocispec.Platform{}, fmt.Errorf("platform %q...: longer than %d bytes: %w", s[:32], MaxPlatformLength, errdefs.ErrInvalidArgument)
	}
	p, err := platforms.Parse(s)
	if err != nil {
		return ocispec.Platform{}, fmt.Errorf("platform %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	if !slices.Contains(knownOS, p.OS) {
		return p, fmt.Errorf("platform %q: unknown os %q (one of %s): %w", s, p.OS, strings.Join(knownOS, ", "), errdefs.ErrInvalidArgument)
	}
	if !slices.Contains(knownArch, p.Architecture) {
		return p, fmt.Errorf("platform %q: unknown architecture %q (one of %s): %w", s, p.Architecture, strings.Join(knownArch, ", "), errdefs.ErrInvalidArgument)
	}
	if p.Variant == "" {
		return p, nil
	}
	if vs, ok := variants[p.Architecture]; ok {
		if !slices.Contains(vs, p.Variant) {
			return p, fmt.Errorf("platform %q: unknown %s variant %q (one of %s): %w", s, p.Architecture, p.Variant, strings.Join(vs, ", "), errdefs.ErrInvalidArgument)
		}
	} else if !otherVariant.MatchString(p.Variant) {
		return p, fmt.Errorf("platform %q: variant %q is not 1 to 16 of [a-z0-9.]: %w", s, p.Variant, errdefs.ErrInvalidArgument)
	}
	return p, nil
}
