package client

import (
	"testing"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// TestBlobStateString pins the names the CLI prints for each blob state,
// and that every state keeld can send has one.
func TestBlobStateString(t *testing.T) {
	want := map[BlobState]string{
		BlobWaiting:     "waiting",
		BlobDownloading: "downloading",
		BlobPushing:     "pushing",
		BlobDone:        "done",
		BlobExists:      "exists",
	}
	for v := range keelv1.BlobState_name {
		s := BlobState(v)
		if s == BlobState(keelv1.BlobState_BLOB_STATE_UNSPECIFIED) {
			continue
		}
		name, ok := want[s]
		if !ok {
			t.Errorf("wire state %v has no client constant", keelv1.BlobState(v))
			continue
		}
		if got := s.String(); got != name {
			t.Errorf("BlobState(%d).String() = %q, want %q", v, got, name)
		}
	}
	if len(want) != len(keelv1.BlobState_name)-1 {
		t.Errorf("%d client states for %d wire states", len(want), len(keelv1.BlobState_name)-1)
	}
}
