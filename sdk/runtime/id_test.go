package runtime

import (
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestValidateContainerID(t *testing.T) {
	for _, tt := range []struct {
		id string
		ok bool
	}{
		{"web", true}, {"a.b_c-d", true}, {"A1", true}, {strings.Repeat("a", 76), true},
		{"", false}, {strings.Repeat("a", 77), false}, {"a--b", false}, {"-a", false},
		{"a/b", false}, {"..", false}, {"a b", false}, {"a.", false}, {"é", false},
	} {
		err := ValidateContainerID(tt.id)
		if tt.ok != (err == nil) {
			t.Errorf("ValidateContainerID(%q) = %v, want ok %v", tt.id, err, tt.ok)
		}
		if err != nil && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "container id")) {
			t.Errorf("ValidateContainerID(%q) = %v, want InvalidArgument about the container id", tt.id, err)
		}
	}
}
