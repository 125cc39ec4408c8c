package oci

import (
	"context"
	"os"
)

// ReadRootFS runs fn on the container's root filesystem as the spec
// options run with ctx see it (WithRootFS, else the spec's absolute root
// path), for an option of the caller's that reads the image's files.
func ReadRootFS(ctx context.Context, s *Spec, fn func(*os.Root) error) error {
	return withRootFS(ctx, s, fn)
}
