package resolver

import (
	"bytes"
	"context"
	"io"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCredentialsCrossTheWire: the credentials a call's context carries
// reach the plugin's context in Resolve, Fetch and Push; a call without
// them carries none.
func TestCredentialsCrossTheWire(t *testing.T) {
	var got []any // what each call saw: Credentials, or false for none
	seen := func(ctx context.Context) {
		if c, ok := CredentialsFrom(ctx); ok {
			got = append(got, c)
		} else {
			got = append(got, false)
		}
	}
	impl := &fake{
		resolve: func(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
			seen(ctx)
			return ref, ocispec.Descriptor{}, nil
		},
		fetch: func(ctx context.Context, _ string, _ ocispec.Descriptor, _ int64) (io.ReadCloser, error) {
			seen(ctx)
			return io.NopCloser(bytes.NewReader([]byte("x"))), nil
		},
		push: func(ctx context.Context, _ string, _ ocispec.Descriptor, r io.Reader) error {
			seen(ctx)
			_, err := io.Copy(io.Discard, r)
			return err
		},
	}
	r, _, _ := serve(t, impl)
	login := Credentials{Username: "u", Secret: "s", IdentityToken: "i"}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want any
	}{
		{"with", WithCredentials(t.Context(), login), login},
		{"without", t.Context(), false},
		{"zero", WithCredentials(t.Context(), Credentials{}), false},
	} {
		got = nil
		if _, _, err := r.Resolve(tc.ctx, "example.com/a:1"); err != nil {
			t.Fatal(err)
		}
		rc, err := r.Fetch(tc.ctx, "example.com/a:1", ocispec.Descriptor{Size: 1}, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		data := []byte("x")
		if err := r.Push(tc.ctx, "example.com/a:1", ocispec.Descriptor{Size: 1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0] != tc.want || got[1] != tc.want || got[2] != tc.want {
			t.Errorf("%s: the plugin saw %v, want %v in each call", tc.name, got, tc.want)
		}
	}
}
