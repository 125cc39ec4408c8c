package client

import (
	"reflect"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// TestImageTargetOverTheWire: an image's target crosses keeld's API whole,
// platform, URLs and artifact type included.
func TestImageTargetOverTheWire(t *testing.T) {
	img := Image{Name: "example.com/app:v1", Labels: map[string]string{"k": "v"}, Target: ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		Digest:       "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		Size:         42,
		URLs:         []string{"https://example.com/blob"},
		Annotations:  map[string]string{"a": "b"},
		ArtifactType: "application/x-test",
		Platform:     &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
	}}
	b, err := proto.Marshal(imageToProto(img))
	if err != nil {
		t.Fatal(err)
	}
	var p keelv1.Image
	if err := proto.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if got := imageFromProto(&p); !reflect.DeepEqual(got, img) {
		t.Fatalf("got %+v, want %+v", got, img)
	}
}
