package runtime

import (
	"fmt"
	"regexp"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// The identifier rule of containerd (pkg/identifiers), written out so the
// SDK does not pull containerd's module into a plugin author's go.mod.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

const maxIDLength = 76

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
	if len(id) > maxIDLength || !idPattern.MatchString(id) {
		return fmt.Errorf("container id %q: must be at most 76 characters, alphanumeric words joined by '.', '_' or '-': %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}
