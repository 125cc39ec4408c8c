// Package descriptor converts OCI content descriptors to and from the
// Descriptor message of keel.types.v1, the one descriptor on every wire keel
// speaks: the plugin protocol (the resolver kind) and keeld's API alike.
package descriptor

import (
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	typesv1 "github.com/keel-runtime/keel/sdk/proto/keel/types/v1"
)

// ToProto converts a descriptor for the wire.
func ToProto(d ocispec.Descriptor) *typesv1.Descriptor {
	p := &typesv1.Descriptor{
		MediaType:    d.MediaType,
		Digest:       d.Digest.String(),
		Size:         d.Size,
		Urls:         d.URLs,
		Annotations:  d.Annotations,
		ArtifactType: d.ArtifactType,
	}
	if d.Platform != nil {
		p.Platform = &typesv1.Platform{
			Os:           d.Platform.OS,
			Architecture: d.Platform.Architecture,
			Variant:      d.Platform.Variant,
			OsVersion:    d.Platform.OSVersion,
			OsFeatures:   d.Platform.OSFeatures,
		}
	}
	return p
}

// FromProto converts a descriptor from the wire. A nil message is the zero
// descriptor. The digest is taken as sent; callers that rely on it call
// Digest.Validate.
func FromProto(p *typesv1.Descriptor) ocispec.Descriptor {
	if p == nil {
		return ocispec.Descriptor{}
	}
	d := ocispec.Descriptor{
		MediaType:    p.MediaType,
		Digest:       digest.Digest(p.Digest),
		Size:         p.Size,
		URLs:         p.Urls,
		Annotations:  p.Annotations,
		ArtifactType: p.ArtifactType,
	}
	if p.Platform != nil {
		d.Platform = &ocispec.Platform{
			OS:           p.Platform.Os,
			Architecture: p.Platform.Architecture,
			Variant:      p.Platform.Variant,
			OSVersion:    p.Platform.OsVersion,
			OSFeatures:   p.Platform.OsFeatures,
		}
	}
	return d
}
