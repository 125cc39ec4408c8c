package images

import (
	"testing"

	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestChainIDs(t *testing.T) {
	a := digest.FromString("a")
	b := digest.FromString("b")
	c := digest.FromString("c")
	ab := digest.FromString(a.String() + " " + b.String())
	abc := digest.FromString(ab.String() + " " + c.String())
	for _, tc := range []struct {
		name string
		in   []digest.Digest
		want []digest.Digest
	}{
		{"one layer is its diff id", []digest.Digest{a}, []digest.Digest{a}},
		{"two", []digest.Digest{a, b}, []digest.Digest{a, ab}},
		{"three", []digest.Digest{a, b, c}, []digest.Digest{a, ab, abc}},
		{"order matters", []digest.Digest{b, a}, []digest.Digest{b, digest.FromString(b.String() + " " + a.String())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]digest.Digest(nil), tc.in...)
			got := ChainIDs(in)
			if len(got) != len(tc.want) {
				t.Fatalf("%v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("chain %d: %s, want %s", i, got[i], tc.want[i])
				}
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Errorf("ChainIDs changed its argument at %d", i)
				}
			}
		})
	}
}

func TestSelectManifests(t *testing.T) {
	man := func(name, plat string) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(name)}
		if plat != "" {
			p := platforms.MustParse(plat)
			d.Platform = &p
		}
		return d
	}
	nested := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromString("nested")}
	amd, arm64v8, armv7, armv6, none := man("amd", "linux/amd64"), man("arm64", "linux/arm64/v8"), man("armv7", "linux/arm/v7"), man("armv6", "linux/arm/v6"), man("none", "")
	idx := func(ms ...ocispec.Descriptor) ocispec.Index { return ocispec.Index{Manifests: ms} }
	for _, tc := range []struct {
		name     string
		idx      ocispec.Index
		platform string
		all      bool
		want     []ocispec.Descriptor
		unpack   int
		notFound bool
	}{
		{"exact", idx(amd, arm64v8), "linux/amd64", false, []ocispec.Descriptor{amd}, 0, false},
		{"arm64 matches arm64/v8", idx(amd, arm64v8), "linux/arm64", false, []ocispec.Descriptor{arm64v8}, 0, false},
		{"arm/v7 prefers v7 over v6", idx(armv6, armv7), "linux/arm/v7", false, []ocispec.Descriptor{armv7}, 0, false},
		{"arm/v7 falls back to v6", idx(amd, armv6), "linux/arm/v7", false, []ocispec.Descriptor{armv6}, 0, false},
		{"arm/v6 does not take v7", idx(armv7), "linux/arm/v6", false, nil, 0, true},
		{"no match", idx(amd), "linux/arm64", false, nil, 0, true},
		{"no platform matches any", idx(none), "linux/s390x", false, []ocispec.Descriptor{none}, 0, false},
		{"nested index skipped", idx(nested, amd), "linux/amd64", false, []ocispec.Descriptor{amd}, 0, false},
		{"all platforms, unpack the match", idx(arm64v8, amd, armv7), "linux/amd64", true, []ocispec.Descriptor{arm64v8, amd, armv7}, 1, false},
		{"all platforms, none matches", idx(arm64v8), "linux/amd64", true, []ocispec.Descriptor{arm64v8}, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParsePlatform(tc.platform)
			if err != nil {
				t.Fatal(err)
			}
			got, unpack, err := SelectManifests(tc.idx, m, tc.all)
			if tc.notFound {
				if !errdefs.IsNotFound(err) {
					t.Fatalf("want NotFound, got %v %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) || unpack != tc.unpack {
				t.Fatalf("got %d manifests, unpack %d; want %d, %d", len(got), unpack, len(tc.want), tc.unpack)
			}
			for i := range got {
				if got[i].Digest != tc.want[i].Digest {
					t.Errorf("manifest %d: %s, want %s", i, got[i].Digest, tc.want[i].Digest)
				}
			}
		})
	}
	if _, err := ParsePlatform("linux/"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ParsePlatform(linux/): %v, want InvalidArgument", err)
	}
}
