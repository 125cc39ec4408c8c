package descriptor

import (
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		d    ocispec.Descriptor
	}{
		{"zero", ocispec.Descriptor{}},
		{"plain", ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageManifest,
			Digest:    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			Size:      42,
		}},
		{"full", ocispec.Descriptor{
			MediaType:    ocispec.MediaTypeImageLayerGzip,
			Digest:       "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			Size:         1 << 30,
			URLs:         []string{"https://example.com/blob"},
			Annotations:  map[string]string{"a": "b"},
			ArtifactType: "application/x-test",
			Platform: &ocispec.Platform{
				OS: "linux", Architecture: "arm64", Variant: "v8",
				OSVersion: "1", OSFeatures: []string{"f"},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromProto(ToProto(tt.d))
			if !reflect.DeepEqual(got, tt.d) {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.d)
			}
		})
	}
	if d := FromProto(nil); !reflect.DeepEqual(d, ocispec.Descriptor{}) {
		t.Fatalf("nil: got %+v", d)
	}
}
