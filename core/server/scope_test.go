package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/go-hclog"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/plugins/snapshotter-native/native"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// namedResolver resolves every reference to its own name, so a test sees
// which resolver a call reached. Fetch and Push are never called.
type namedResolver struct {
	resolver.Resolver
	name string
}

func (r namedResolver) Resolve(context.Context, string) (string, ocispec.Descriptor, error) {
	return r.name, ocispec.Descriptor{}, nil
}

// scopedKeeld serves keeld's API (newGRPCServer: its interceptors and
// services) over a real metadata store, with two native snapshotters —
// "native", the default, and "second" — and stand-in resolvers by the given
// names. It returns a connection to it.
func scopedKeeld(t *testing.T, resolvers ...string) *grpc.ClientConn {
	t.Helper()
	root := t.TempDir()
	cfg := &config.Config{Root: filepath.Join(root, "root"), State: filepath.Join(root, "state"), DefaultSnapshotter: "native"}
	s := newServer(cfg, hclog.NewNullLogger())
	if err := s.openDB(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	for _, name := range []string{"native", "second"} {
		b, err := native.New(t.Context(), sdk.Env{Root: filepath.Join(root, name)})
		if err != nil {
			t.Fatal(err)
		}
		s.snapshotters[name] = metadata.NewSnapshotter(s.db, name, b)
	}
	for _, name := range resolvers {
		s.resolvers[name] = namedResolver{name: name}
	}
	srv := s.newGRPCServer()
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///keeld", append(host.DialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// scoped returns ctx whose calls send the selector metadata pairs kv.
func scoped(ctx context.Context, kv ...string) context.Context {
	return grpcmd.AppendToOutgoingContext(ctx, kv...)
}

// leaseNamespaces makes lease id with the selectors kv and returns the
// namespaces, of "default" and "a", that then hold it.
func leaseNamespaces(ctx context.Context, conn *grpc.ClientConn, id string, kv ...string) ([]string, error) {
	leases := keelv1.NewLeasesClient(conn)
	if _, err := leases.Create(scoped(ctx, kv...), &keelv1.CreateLeaseRequest{Id: id}); err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	var in []string
	for _, ns := range []string{"default", "a"} {
		resp, err := leases.List(scoped(ctx, keelv1.MetadataNamespace, ns), &keelv1.ListLeasesRequest{})
		if err != nil {
			return nil, errdefs.FromGRPC(err)
		}
		if slices.ContainsFunc(resp.Leases, func(l *keelv1.Lease) bool { return l.Id == id }) {
			in = append(in, ns)
		}
	}
	return in, nil
}

// snapshotters prepares key with the selectors kv and returns the
// snapshotters, of "native" and "second", that then hold it.
func snapshotters(ctx context.Context, conn *grpc.ClientConn, key string, kv ...string) ([]string, error) {
	sn := snapshot.NewClient(conn)
	if _, err := sn.Prepare(scoped(ctx, kv...), key, ""); err != nil {
		return nil, err
	}
	var in []string
	for _, name := range []string{"native", "second"} {
		_, err := sn.Stat(scoped(ctx, keelv1.MetadataSnapshotter, name), key)
		if err == nil {
			in = append(in, name)
		} else if !errdefs.IsNotFound(err) {
			return nil, err
		}
	}
	return in, nil
}

// TestScope: keeld reads each selector from its metadata key, fills in its
// default when the call names none, and checks it where the call uses it,
// with the error class it always had.
func TestScope(t *testing.T) {
	one := scopedKeeld(t, "docker")
	two := scopedKeeld(t, "a", "b")
	none := scopedKeeld(t)
	must := func(t *testing.T, conn *grpc.ClientConn, id string) {
		t.Helper()
		if _, err := keelv1.NewLeasesClient(conn).Create(t.Context(), &keelv1.CreateLeaseRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name string
		// run makes the calls and returns what they saw (compared to
		// want) and the error (of class class, nil for none).
		run   func(t *testing.T) (any, error)
		want  any
		class func(error) bool
	}{
		{"NamespaceDefault", func(t *testing.T) (any, error) {
			return leaseNamespaces(t.Context(), one, "l-default")
		}, []string{"default"}, nil},
		{"NamespaceEmptyIsDefault", func(t *testing.T) (any, error) {
			return leaseNamespaces(t.Context(), one, "l-empty", keelv1.MetadataNamespace, "")
		}, []string{"default"}, nil},
		{"NamespaceNamed", func(t *testing.T) (any, error) {
			return leaseNamespaces(t.Context(), one, "l-a", keelv1.MetadataNamespace, "a")
		}, []string{"a"}, nil},
		{"NamespaceFirstValue", func(t *testing.T) (any, error) {
			return leaseNamespaces(t.Context(), one, "l-first", keelv1.MetadataNamespace, "a", keelv1.MetadataNamespace, "default")
		}, []string{"a"}, nil},
		{"NamespaceInvalid", func(t *testing.T) (any, error) {
			return leaseNamespaces(t.Context(), one, "l-bad", keelv1.MetadataNamespace, "a/b")
		}, nil, errdefs.IsInvalidArgument},
		// Checked where it is used: a call that uses no namespace is not
		// refused for a bad one.
		{"NamespaceInvalidUnused", func(t *testing.T) (any, error) {
			_, err := keelv1.NewVersionClient(one).Version(scoped(t.Context(), keelv1.MetadataNamespace, "a/b"), &keelv1.VersionRequest{})
			return nil, errdefs.FromGRPC(err)
		}, nil, nil},
		{"LeaseNamed", func(t *testing.T) (any, error) {
			must(t, one, "held")
			if _, err := snapshot.NewClient(one).Prepare(scoped(t.Context(), keelv1.MetadataLease, "held"), "leased", ""); err != nil {
				return nil, err
			}
			resp, err := keelv1.NewLeasesClient(one).ListResources(t.Context(), &keelv1.ListLeaseResourcesRequest{Id: "held"})
			if err != nil {
				return nil, errdefs.FromGRPC(err)
			}
			var got []string
			for _, r := range resp.Resources {
				got = append(got, r.Type+" "+r.Id)
			}
			return got, nil
		}, []string{"snapshots/native leased"}, nil},
		{"LeaseUnknown", func(t *testing.T) (any, error) {
			_, err := snapshot.NewClient(one).Prepare(scoped(t.Context(), keelv1.MetadataLease, "nope"), "unleased", "")
			return nil, err
		}, nil, errdefs.IsNotFound},
		{"LeaseUnknownUnused", func(t *testing.T) (any, error) {
			_, err := keelv1.NewVersionClient(one).Version(scoped(t.Context(), keelv1.MetadataLease, "nope"), &keelv1.VersionRequest{})
			return nil, errdefs.FromGRPC(err)
		}, nil, nil},
		{"SnapshotterDefault", func(t *testing.T) (any, error) {
			return snapshotters(t.Context(), one, "k-default")
		}, []string{"native"}, nil},
		{"SnapshotterNamed", func(t *testing.T) (any, error) {
			return snapshotters(t.Context(), one, "k-second", keelv1.MetadataSnapshotter, "second")
		}, []string{"second"}, nil},
		{"SnapshotterUnknown", func(t *testing.T) (any, error) {
			return snapshotters(t.Context(), one, "k-nope", keelv1.MetadataSnapshotter, "nope")
		}, nil, errdefs.IsNotFound},
		{"ResolverOnlyOne", func(t *testing.T) (any, error) {
			name, _, err := resolver.NewClient(one).Resolve(t.Context(), "example.com/a:b")
			return name, err
		}, "docker", nil},
		{"ResolverNamed", func(t *testing.T) (any, error) {
			name, _, err := resolver.NewClient(two).Resolve(scoped(t.Context(), keelv1.MetadataResolver, "b"), "example.com/a:b")
			return name, err
		}, "b", nil},
		{"ResolverUnknown", func(t *testing.T) (any, error) {
			_, _, err := resolver.NewClient(one).Resolve(scoped(t.Context(), keelv1.MetadataResolver, "nope"), "example.com/a:b")
			return nil, err
		}, nil, errdefs.IsNotFound},
		{"ResolverNoneNamedOfTwo", func(t *testing.T) (any, error) {
			_, _, err := resolver.NewClient(two).Resolve(t.Context(), "example.com/a:b")
			return nil, err
		}, nil, errdefs.IsInvalidArgument},
		{"ResolverNoneConfigured", func(t *testing.T) (any, error) {
			_, _, err := resolver.NewClient(none).Resolve(t.Context(), "example.com/a:b")
			return nil, err
		}, nil, errdefs.IsNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.run(t)
			if tt.class != nil {
				if !tt.class(err) {
					t.Fatalf("err = %v, not of the class the case wants", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
