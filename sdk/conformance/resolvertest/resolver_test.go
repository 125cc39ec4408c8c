package resolvertest_test

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance/resolvertest"
	"github.com/keel-runtime/keel/sdk/conformance/runner"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// The resolver suite runs here against small in-test plugins, across gRPC:
// one that conforms must pass, one that does not must fail.

// refRepo is a much simplified reference grammar, enough for the fakes.
var refRepo = regexp.MustCompile(`^[a-z0-9]+([._/-][a-z0-9]+)*(\.[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)

// strictResolver validates references and knows no image.
type strictResolver struct{ lax bool }

func (r *strictResolver) Resolve(_ context.Context, ref string) (string, ocispec.Descriptor, error) {
	if !r.lax {
		repo, dgst, hasDigest := strings.Cut(ref, "@")
		if hasDigest {
			if err := digest.Digest(dgst).Validate(); err != nil {
				return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
			}
		}
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		if !refRepo.MatchString(repo) {
			return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %w", ref, errdefs.ErrInvalidArgument)
		}
	}
	return "", ocispec.Descriptor{}, fmt.Errorf("reference %q: %w", ref, errdefs.ErrNotFound)
}

func (r *strictResolver) Fetch(context.Context, string, ocispec.Descriptor, int64) (io.ReadCloser, error) {
	return nil, errdefs.ErrNotFound
}

func (r *strictResolver) Push(context.Context, string, ocispec.Descriptor, io.Reader) error {
	return errdefs.ErrUnavailable
}

func (r *strictResolver) Close() error { return nil }

func TestResolverSuite(t *testing.T) {
	resolvertest.Run(conformance.Go(t), resolvertest.InProcess(func(context.Context, sdk.Env) (resolver.Resolver, error) {
		return &strictResolver{}, nil
	}), conformance.WithRun(regexp.MustCompile(`^ResolveInvalidReference$`)))
}

func TestResolverSuiteCatchesViolations(t *testing.T) {
	got := runner.StatusByCase(runner.RunSuite(t.Context(), func(ct conformance.T) {
		resolvertest.Run(ct, resolvertest.InProcess(func(context.Context, sdk.Env) (resolver.Resolver, error) {
			return &strictResolver{lax: true}, nil
		}))
	}))
	if got["ResolveInvalidReference"] != "fail" {
		t.Errorf("a resolver accepting any reference passed: %v", got)
	}
}
