package namespaces

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"k8s.io", true},
		{"a", true},
		{"A-b_c.9", true},
		{strings.Repeat("a", MaxLength), true},
		{strings.Repeat("a", MaxLength+1), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"a..b", false},
		{"a/b", false},
		{"a b", false},
		{"ü", false},
	} {
		err := Validate(tc.name)
		if tc.ok && err != nil {
			t.Errorf("Validate(%q) = %v, want nil", tc.name, err)
		}
		if !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("Validate(%q) = %v, want InvalidArgument", tc.name, err)
		}
	}
}

func TestNamespaceRequired(t *testing.T) {
	for _, tc := range []struct {
		desc string
		ctx  context.Context
		want string
	}{
		{"absent", context.Background(), ""},
		{"empty", WithNamespace(context.Background(), ""), ""},
		{"invalid", WithNamespace(context.Background(), "a/b"), ""},
		{"valid", WithNamespace(context.Background(), "ns1"), "ns1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := NamespaceRequired(tc.ctx)
			if tc.want == "" {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestSnapshotter(t *testing.T) {
	if _, ok := Snapshotter(context.Background()); ok {
		t.Fatal("snapshotter present in empty ctx")
	}
	if got, ok := Snapshotter(WithSnapshotter(context.Background(), "overlay")); !ok || got != "overlay" {
		t.Fatalf("got %q, %v", got, ok)
	}
}

// echoServer answers Get with the namespace and snapshotter of the call's
// context.
type echoServer struct {
	keelv1.UnimplementedNamespacesServer
}

func (echoServer) Get(ctx context.Context, _ *keelv1.GetNamespaceRequest) (*keelv1.Namespace, error) {
	ns, _ := Namespace(ctx)
	sn, _ := Snapshotter(ctx)
	return &keelv1.Namespace{Name: ns, Labels: map[string]string{"snapshotter": sn}}, nil
}

func TestUnaryInterceptor(t *testing.T) {
	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer(grpc.UnaryInterceptor(UnaryServerInterceptor()))
	keelv1.RegisterNamespacesServer(srv, echoServer{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///buf",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := keelv1.NewNamespacesClient(conn)

	for _, tc := range []struct {
		desc            string
		ctx             context.Context
		wantNS, wantSnp string
	}{
		{"default", context.Background(), keelv1.DefaultNamespace, ""},
		{"metadata", metadata.AppendToOutgoingContext(context.Background(),
			keelv1.MetadataNamespace, "ns1", keelv1.MetadataSnapshotter, "overlay"), "ns1", "overlay"},
		{"to outgoing", ToOutgoing(WithSnapshotter(WithNamespace(context.Background(), "ns2"), "native")), "ns2", "native"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := client.Get(tc.ctx, &keelv1.GetNamespaceRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.wantNS || got.Labels["snapshotter"] != tc.wantSnp {
				t.Fatalf("got %q/%q, want %q/%q", got.Name, got.Labels["snapshotter"], tc.wantNS, tc.wantSnp)
			}
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

func TestStreamInterceptor(t *testing.T) {
	in := metadata.NewIncomingContext(context.Background(), metadata.Pairs(keelv1.MetadataNamespace, "ns1"))
	var got string
	err := StreamServerInterceptor()(nil, fakeStream{ctx: in}, &grpc.StreamServerInfo{}, func(_ any, ss grpc.ServerStream) error {
		got, _ = Namespace(ss.Context())
		return nil
	})
	if err != nil || got != "ns1" {
		t.Fatalf("got %q, %v; want ns1", got, err)
	}
}
