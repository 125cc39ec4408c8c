package oci

import (
	"context"
	"fmt"
	"os"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// DefaultInit is the init WithInit runs when given no path: Debian's
// tini package's static build.
const DefaultInit = "/usr/bin/tini-static"

// InitPath is where the init binary appears in the container.
const InitPath = "/sbin/keel-init"

// WithInit runs a small init as the container's PID 1, as Docker's --init
// does: the binary at path (DefaultInit when ""; it must be static) is
// bind-mounted read-only at InitPath and runs the command as its child,
// forwarding signals to it and reaping zombies. The path is read on the
// host that runs the container (keeld's, the caller's for a local socket).
// Under GenerateSpec it wraps the final command, whatever the options'
// order; elsewhere give it after the command is set.
func WithInit(path string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		if path == "" {
			path = DefaultInit
		}
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			return fmt.Errorf("init: %w (Debian's tini package has %s): %w", err, DefaultInit, errdefs.ErrFailedPrecondition)
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("init %s: not an executable file: %w", path, errdefs.ErrFailedPrecondition)
		}
		if st := finalOf(ctx); st != nil {
			st.init = path
			return nil
		}
		return applyInit(s, path)
	}
}

func applyInit(s *Spec, path string) error {
	if len(s.Process.Args) == 0 {
		return fmt.Errorf("init: no command to run: %w", errdefs.ErrInvalidArgument)
	}
	s.Mounts = slices.DeleteFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == InitPath })
	s.Mounts = append(s.Mounts, specs.Mount{Destination: InitPath, Type: "bind", Source: path, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	s.Process.Args = append([]string{InitPath, "--"}, s.Process.Args...)
	return nil
}
