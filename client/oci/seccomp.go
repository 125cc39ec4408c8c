package oci

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Seccomp: GenerateSpec gives every spec Docker's default profile
// (github.com/moby/profiles/seccomp) unless an option said otherwise
// (WithSeccompUnconfined, WithPrivileged, WithSeccompProfile). The profile
// allows some calls only with some capabilities (mount, unshare with
// CAP_SYS_ADMIN...), so it is made last, from the final capability set,
// whatever the options' order.
//
// A spec built without GenerateSpec gets nothing by default: give it
// WithDefaultSeccomp (or call it) after every option that changes the
// capabilities.

// finalState is what GenerateSpec applies after every option: the options
// below record their choice on GenerateSpec's context instead of changing
// the spec at once.
type finalState struct {
	seccomp func(s *Spec) (*specs.LinuxSeccomp, error) // nil: none
	init    string                                     // WithInit's binary; "" for none
}

type finalKey struct{}

func finalOf(ctx context.Context) *finalState {
	st, _ := ctx.Value(finalKey{}).(*finalState)
	return st
}

// finish applies the choices recorded on ctx, in the order that makes
// each see the spec it depends on.
func (st *finalState) finish(s *Spec) error {
	if st.init != "" {
		if err := applyInit(s, st.init); err != nil {
			return err
		}
	}
	if st.seccomp == nil {
		s.Linux.Seccomp = nil
		return nil
	}
	p, err := st.seccomp(s)
	if err != nil {
		return err
	}
	s.Linux.Seccomp = p
	return nil
}

// setSeccomp records mk as the spec's profile maker when ctx is
// GenerateSpec's, else applies it at once.
func setSeccomp(ctx context.Context, s *Spec, mk func(*Spec) (*specs.LinuxSeccomp, error)) error {
	if st := finalOf(ctx); st != nil {
		st.seccomp = mk
		return nil
	}
	if mk == nil {
		if s.Linux != nil {
			s.Linux.Seccomp = nil
		}
		return nil
	}
	p, err := mk(s)
	if err != nil {
		return err
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.Seccomp = p
	return nil
}

// withCaps is s with a non-nil capability set, as the profile library
// reads it.
func withCaps(s *Spec) *Spec {
	if s.Process != nil && s.Process.Capabilities != nil {
		return s
	}
	c := *s
	c.Process = &specs.Process{Capabilities: &specs.LinuxCapabilities{}}
	return &c
}

func defaultSeccomp(s *Spec) (*specs.LinuxSeccomp, error) {
	p, err := seccomp.GetDefaultProfile(withCaps(s))
	if err != nil {
		return nil, fmt.Errorf("default seccomp profile: %w", err)
	}
	return p, nil
}

// WithDefaultSeccomp gives the spec Docker's default seccomp profile, for
// its final capabilities. GenerateSpec does so unless told otherwise; a
// spec made by hand gets it by calling this after its last capability
// change:
//
//	err := oci.WithDefaultSeccomp(ctx, spec)
func WithDefaultSeccomp(ctx context.Context, s *Spec) error {
	return setSeccomp(ctx, s, defaultSeccomp)
}

// WithSeccompUnconfined runs the container without a seccomp filter.
func WithSeccompUnconfined(ctx context.Context, s *Spec) error {
	return setSeccomp(ctx, s, nil)
}

// WithSeccompProfile uses a seccomp profile in Docker's JSON format
// (conditional rules on capabilities, architectures and kernel versions
// included); name says where it came from in errors.
func WithSeccompProfile(name string, profile []byte) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		// Bad JSON fails here, whatever the capabilities.
		if _, err := loadSeccomp(name, profile, withCaps(s)); err != nil {
			return err
		}
		return setSeccomp(ctx, s, func(s *Spec) (*specs.LinuxSeccomp, error) {
			return loadSeccomp(name, profile, withCaps(s))
		})
	}
}

// WithSeccompProfileFile is WithSeccompProfile of the file at path.
func WithSeccompProfileFile(path string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		b, err := readFileLimited(path, "seccomp profile")
		if err != nil {
			return err
		}
		return WithSeccompProfile(path, b)(ctx, s)
	}
}

// seccompActions are the actions runc knows.
var seccompActions = map[specs.LinuxSeccompAction]bool{
	specs.ActKill: true, specs.ActKillProcess: true, specs.ActKillThread: true, specs.ActTrap: true,
	specs.ActErrno: true, specs.ActTrace: true, specs.ActAllow: true, specs.ActLog: true, specs.ActNotify: true,
}

func loadSeccomp(name string, profile []byte, s *Spec) (*specs.LinuxSeccomp, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("seccomp profile %s: %s: %w", name, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	p, err := seccomp.LoadProfile(string(profile), s)
	if err != nil {
		return nil, bad("%v", err)
	}
	// The library takes an empty profile for "no filter"; a file that says
	// nothing is more likely a mistake than a wish.
	if p == nil {
		return nil, bad("no defaultAction and no syscalls (seccomp=unconfined runs without a profile)")
	}
	if !seccompActions[p.DefaultAction] {
		return nil, bad("defaultAction %q: not a seccomp action (SCMP_ACT_ERRNO, SCMP_ACT_ALLOW...)", p.DefaultAction)
	}
	for _, sc := range p.Syscalls {
		if len(sc.Names) == 0 {
			return nil, bad("a syscalls entry has no names")
		}
		if !seccompActions[sc.Action] {
			return nil, bad("syscalls %v: action %q: not a seccomp action", sc.Names, sc.Action)
		}
	}
	return p, nil
}

// maxFileSize bounds what the options read from a file the caller named
// (Docker's default profile is 20 KiB): /dev/zero fails, not fills memory.
const maxFileSize = 16 << 20

// readFileLimited reads the file at path, what it is for in errors.
func readFileLimited(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %s: %w: %w", what, path, err, errdefs.ErrInvalidArgument)
	case len(b) > maxFileSize:
		return nil, fmt.Errorf("%s %s: larger than %d MiB: %w", what, path, maxFileSize>>20, errdefs.ErrInvalidArgument)
	}
	return b, nil
}
