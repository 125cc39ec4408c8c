package server

import (
	"strings"
	"testing"

	"github.com/keel-runtime/keel/core/images"
)

// TestBlobStateToProto pins each state of core/images to the wire state of
// the same name.
func TestBlobStateToProto(t *testing.T) {
	for s := images.BlobWaiting; s <= images.BlobExists; s++ {
		w := blobStateToProto[s]
		if got := strings.ToLower(strings.TrimPrefix(w.String(), "BLOB_STATE_")); got != s.String() {
			t.Errorf("%s is sent as %s", s, w)
		}
	}
}
