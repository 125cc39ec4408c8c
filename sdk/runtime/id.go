package runtime

import (
	"fmt"

	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ValidateContainerID reports whether id can name a container:
// containerd's identifier rule (at most 76 characters, alphanumeric words
// joined by single '.', '_' or '-'), so it is safe as a path component and
// a snapshot key, and "--" stays free to join a namespace and an id into a
// runtime task id. InvalidArgument otherwise. keeld, the client and the CLI
// check ids with it, so a bad id is refused as one before anything else
// is made under it.
func ValidateContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("container id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if identifiers.Validate(id) != nil {
		return fmt.Errorf("container id %q: must be at most 76 characters, alphanumeric words joined by '.', '_' or '-': %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}
