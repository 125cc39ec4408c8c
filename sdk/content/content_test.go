package content

import (
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

func TestAdaptors(t *testing.T) {
	d := digest.FromString("x")
	info := Info{Digest: d, Size: 7, Labels: map[string]string{"io.keel/gc.root": "1", "a.b": "c", "k": "v"}}
	st := Status{Ref: "pull/1", Offset: 3, Total: 7, Expected: d}
	for _, tc := range []struct {
		filter string
		status bool // match st rather than info
		want   bool
	}{
		{"digest==" + d.String(), false, true},
		{"size==7", false, true},
		{"size==8", false, false},
		{`labels."io.keel/gc.root"==1`, false, true},
		{"labels.a.b==c", false, true},
		{"labels.k,labels.nope", false, false},
		{"labels", false, false},
		{"ref==pull/1", true, true},
		{"expected==" + d.String(), true, true},
		{"offset==3,total==7", true, true},
		{"digest", true, false},
	} {
		f, err := filters.Parse(tc.filter)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.filter, err)
		}
		a := AdaptInfo(info)
		if tc.status {
			a = AdaptStatus(st)
		}
		if got := f.Match(a); got != tc.want {
			t.Errorf("%q (status %v) = %v, want %v", tc.filter, tc.status, got, tc.want)
		}
	}
	if _, ok := AdaptStatus(Status{Ref: "r"}).Field([]string{"expected"}); ok {
		t.Error("empty expected digest is present")
	}
}

func TestApplyWriterOpts(t *testing.T) {
	d := digest.FromString("x")
	for _, tc := range []struct {
		name string
		opts []WriterOpt
		ok   bool
	}{
		{"RefAndDescriptor", []WriterOpt{WithRef("r"), WithDescriptor(ocispec.Descriptor{Digest: d, Size: 1})}, true},
		{"RefOnly", []WriterOpt{WithRef("r")}, true},
		{"NoRef", []WriterOpt{WithDescriptor(ocispec.Descriptor{Digest: d})}, false},
		{"BadDigest", []WriterOpt{WithRef("r"), WithDescriptor(ocispec.Descriptor{Digest: "sha256:zz"})}, false},
		{"NegativeSize", []WriterOpt{WithRef("r"), WithDescriptor(ocispec.Descriptor{Size: -1})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ApplyWriterOpts(tc.opts...)
			if tc.ok && err != nil {
				t.Fatalf("got %v", err)
			}
			if !tc.ok && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("got %v, want invalid argument", err)
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 123).UTC()
	info := Info{Digest: digest.FromString("x"), Size: 9, CreatedAt: now, UpdatedAt: now.Add(time.Second), Labels: map[string]string{"a": "b"}}
	got := infoFromProto(infoToProto(info))
	if got.Digest != info.Digest || got.Size != info.Size || !got.CreatedAt.Equal(info.CreatedAt) || !got.UpdatedAt.Equal(info.UpdatedAt) || got.Labels["a"] != "b" {
		t.Errorf("info round trip: %+v, want %+v", got, info)
	}
	st := Status{Ref: "r", Offset: 1, Total: 2, Expected: info.Digest, StartedAt: now}
	if gs := statusFromProto(statusToProto(st)); gs != st {
		t.Errorf("status round trip: %+v, want %+v", gs, st)
	}
	if !infoFromProto(infoToProto(Info{})).CreatedAt.IsZero() {
		t.Error("zero time does not survive the wire")
	}
}

func TestWithLabelsMerges(t *testing.T) {
	info, err := ApplyOpts(WithLabels(map[string]string{"a": "1"}), WithLabels(map[string]string{"b": "2"}))
	if err != nil || info.Labels["a"] != "1" || info.Labels["b"] != "2" {
		t.Fatalf("got %+v, %v", info, err)
	}
}
