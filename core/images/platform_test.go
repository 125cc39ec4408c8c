package images

import (
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestCheckPlatform(t *testing.T) {
	cases := []struct {
		in   string
		ok   bool
		want string // in the error
	}{
		{"linux/amd64", true, ""},
		{"linux/amd64/v3", true, ""},
		{"linux/arm64", true, ""},
		{"linux/arm64/v9.2", true, ""},
		{"linux/arm/v5", true, ""},
		{"linux/arm/v7", true, ""},
		{"linux/riscv64", true, ""},
		{"windows/amd64", true, ""},
		{"linux/arm/v3000000", false, "variant"},
		{"linux/arm/v4", false, "v5, v6, v7, v8"},
		{"linux/amd64/v3000000", false, "variant"},
		{"linux/arm64/v100", false, "variant"},
		{"linux/ppc64le/" + strings.Repeat("x", 40), false, "variant"},
		{"plan10/amd64", false, "unknown os"},
		{"linux/z80", false, "unknown architecture"},
		{"linux/" + strings.Repeat("a", 200), false, "longer than"},
		{"linux/*", false, "wildcards"},
		{"", false, ""},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			start := time.Now()
			m, err := ParsePlatform(c.in)
			if c.ok {
				if err != nil || m == nil {
					t.Fatalf("ParsePlatform(%q) = %v", c.in, err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParsePlatform(%q) = %v, want InvalidArgument naming %q", c.in, err, c.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusing %q took %s", c.in, d)
			}
		})
	}
}
