package resolver

import (
	"context"

	typesv1 "github.com/keel-runtime/keel/sdk/proto/keel/types/v1"
)

// Credentials are a registry login given with one call, such as a
// kubelet's image pull secret: the resolver uses them for the reference's
// own registry, over its configured credentials, and never sends them to
// a mirror. They travel in the call's context (WithCredentials), so the
// Resolver interface is unchanged; over the wire they are a field of each
// request.
type Credentials struct {
	Username string
	// Secret is the password (or a personal access token).
	Secret string
	// IdentityToken is an OAuth2 refresh token (docker login's), traded
	// at the registry's token service; Username and Secret are then
	// unused.
	IdentityToken string
}

// IsZero reports whether c holds no login.
func (c Credentials) IsZero() bool { return c == Credentials{} }

// CapabilityCallCredentials is announced by resolvers that use the
// credentials a call carries (CallCredentialsTaker). keeld refuses a call
// with credentials for a resolver without it, rather than have it
// ignore them.
const CapabilityCallCredentials = "call-credentials"

// CallCredentialsTaker is implemented by resolvers that use the
// credentials CredentialsFrom finds in a call's context.
type CallCredentialsTaker interface {
	TakesCallCredentials()
}

type credentialsKey struct{}

// WithCredentials returns ctx carrying c for the resolver calls made with
// it; zero credentials carry nothing.
func WithCredentials(ctx context.Context, c Credentials) context.Context {
	if c.IsZero() {
		return ctx
	}
	return context.WithValue(ctx, credentialsKey{}, c)
}

// CredentialsFrom returns the credentials ctx carries, if any.
func CredentialsFrom(ctx context.Context) (Credentials, bool) {
	c, ok := ctx.Value(credentialsKey{}).(Credentials)
	return c, ok
}

// CredentialsToProto is the wire form of ctx's credentials; nil for none.
func CredentialsToProto(ctx context.Context) *typesv1.Credentials {
	c, ok := CredentialsFrom(ctx)
	if !ok {
		return nil
	}
	return &typesv1.Credentials{Username: c.Username, Secret: c.Secret, IdentityToken: c.IdentityToken}
}

// CredentialsFromProto returns ctx carrying p's credentials.
func CredentialsFromProto(ctx context.Context, p *typesv1.Credentials) context.Context {
	if p == nil {
		return ctx
	}
	return WithCredentials(ctx, Credentials{Username: p.Username, Secret: p.Secret, IdentityToken: p.IdentityToken})
}
