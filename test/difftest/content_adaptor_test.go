package difftest_test

import (
	"testing"

	ccontent "github.com/containerd/containerd/v2/core/content"
	cfilters "github.com/containerd/containerd/v2/pkg/filters"
	digest "github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/filters"
)

// TestAdaptInfoDifferential matches the same filters against the same
// blobs through keel's AdaptInfo and containerd's: they agree on every
// field containerd knows (size is keel's own).
func TestAdaptInfoDifferential(t *testing.T) {
	d := digest.FromString("x")
	blobs := []map[string]string{
		nil,
		{},
		{"io.keel/gc.root": "1", "a.b": "c", "k": "v"},
		{"k": "", "": "nokey"},
	}
	exprs := []string{
		"digest", "digest==" + d.String(), `digest!=""`, "digest~=^sha256:",
		"labels", "labels==nokey", "labels.k", `labels.k!=""`, "labels.k!=v", "labels.k~=^$",
		"labels.a.b==c", `labels."a.b"==c`, `labels."io.keel/gc.root"`, `labels.""`,
		"labels.nope", `labels.nope!=""`, "nope", `nope!=""`, "nope~=^$",
	}
	for _, expr := range exprs {
		ours, err := filters.Parse(expr)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		theirs, err := cfilters.ParseAll(expr)
		if err != nil {
			t.Fatalf("containerd %q: %v", expr, err)
		}
		for _, l := range blobs {
			o := ours.Match(content.AdaptInfo(content.Info{Digest: d, Size: 1, Labels: l}))
			c := theirs.Match(ccontent.AdaptInfo(ccontent.Info{Digest: d, Size: 1, Labels: l}))
			if o != c {
				t.Errorf("%q on labels %v: keel %v, containerd %v", expr, l, o, c)
			}
		}
	}
}
