package registry

import (
	"bytes"
	"errors"
	"testing"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestVariants starts every variant, seeds an image and an index in OCI
// and Docker media types with gzip and zstd layers, and reads a blob back.
func TestVariants(t *testing.T) {
	for name, opts := range Variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r, err := Start(t, opts)
			if errors.Is(err, ErrNoRegistry) {
				testkit.SkipOrFail(t, "%v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			for _, docker := range []bool{false, true} {
				amd, err := BuildImage(ImageOptions{Docker: docker})
				if err != nil {
					t.Fatal(err)
				}
				arm, err := BuildImage(ImageOptions{Docker: docker, Zstd: true, Arch: "arm64"})
				if err != nil {
					t.Fatal(err)
				}
				idx, err := BuildIndex(docker, amd, arm)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.PushIndex(ctx, "test/multi", "latest", idx, amd, arm); err != nil {
					t.Fatal(err)
				}
				got, err := r.GetBlob(ctx, "test/multi", arm.Layers[0].Desc.Digest)
				if err != nil || !bytes.Equal(got, arm.Layers[0].Data) {
					t.Fatalf("blob back: %v", err)
				}
			}
		})
	}
}
