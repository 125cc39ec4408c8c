package client

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// recorder is a keeld that answers every method Unimplemented, after
// recording which one was called and with what metadata.
type recorder struct {
	mu    sync.Mutex
	calls []recorded
}

type recorded struct {
	method string
	md     metadata.MD
}

func (r *recorder) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	r.mu.Lock()
	r.calls = append(r.calls, recorded{method, md})
	r.mu.Unlock()
	return status.Error(codes.Unimplemented, "recorded")
}

func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls := r.calls
	r.calls = nil
	return calls
}

func serveRecorder(t *testing.T) (string, *recorder) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "keeld.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(r.handle))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return sock, r
}

// TestScopeMetadata: every selector a call is given (client option,
// context helper, per-call option, service handle) reaches keeld as its
// metadata key exactly once, on unary calls and streams alike, and a
// selector the call does not name is not sent.
func TestScopeMetadata(t *testing.T) {
	sock, r := serveRecorder(t)
	def := newClient(t, sock)
	ci := newClient(t, sock, WithNamespace("ci"))
	withMD := func(ctx context.Context, key, value string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, key, value)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromString("x"), Size: 1}

	tests := []struct {
		name string
		call func(ctx context.Context) error
		// method, when set, is part of the name of the one method called.
		method string
		want   keelv1.Scope
	}{
		{"Default", func(ctx context.Context) error { _, err := def.Version(ctx); return err },
			"", keelv1.Scope{Namespace: "default"}},
		{"ClientNamespace", func(ctx context.Context) error { _, err := ci.Version(ctx); return err },
			"", keelv1.Scope{Namespace: "ci"}},
		{"ContextNamespace", func(ctx context.Context) error { _, err := ci.Version(WithNamespaceContext(ctx, "other")); return err },
			"", keelv1.Scope{Namespace: "other"}},
		{"ContextNamespaceOverMetadata", func(ctx context.Context) error {
			_, err := ci.Version(WithNamespaceContext(withMD(ctx, keelv1.MetadataNamespace, "md"), "other"))
			return err
		}, "", keelv1.Scope{Namespace: "other"}},
		{"Plugins", func(ctx context.Context) error { _, err := ci.Plugins(ctx); return err },
			"", keelv1.Scope{Namespace: "ci"}},
		{"Namespaces", func(ctx context.Context) error { _, err := ci.Namespaces().Create(ctx, "n1", nil); return err },
			"", keelv1.Scope{Namespace: "ci"}},
		{"ContentUnary", func(ctx context.Context) error {
			_, err := ci.ContentStore().Info(WithNamespaceContext(ctx, "blobs"), digest.FromString("hello"))
			return err
		}, "", keelv1.Scope{Namespace: "blobs"}},
		{"LeaseUnary", func(ctx context.Context) error { _, err := def.Version(WithLease(ctx, "l1")); return err },
			"", keelv1.Scope{Namespace: "default", Lease: "l1"}},
		{"LeaseStream", func(ctx context.Context) error {
			return ci.ContentStore().Walk(WithLease(ctx, "l1"), func(content.Info) error { return nil })
		}, "", keelv1.Scope{Namespace: "ci", Lease: "l1"}},
		{"LeaseLastWins", func(ctx context.Context) error {
			_, err := def.Version(WithLease(WithLease(ctx, "l1"), "l2"))
			return err
		}, "", keelv1.Scope{Namespace: "default", Lease: "l2"}},
		{"LeaseOverMetadata", func(ctx context.Context) error {
			_, err := def.Version(WithLease(withMD(ctx, keelv1.MetadataLease, "md"), "l1"))
			return err
		}, "", keelv1.Scope{Namespace: "default", Lease: "l1"}},
		{"LeaseFromMetadata", func(ctx context.Context) error {
			_, err := def.Version(withMD(ctx, keelv1.MetadataLease, "md"))
			return err
		}, "", keelv1.Scope{Namespace: "default", Lease: "md"}},
		{"SnapshotServiceUnary", func(ctx context.Context) error {
			_, err := ci.SnapshotService("btrfs").Stat(ctx, "k")
			return err
		}, "", keelv1.Scope{Namespace: "ci", Snapshotter: "btrfs"}},
		{"SnapshotServiceStream", func(ctx context.Context) error {
			ctx = WithLease(WithNamespaceContext(ctx, "snaps"), "l1")
			return ci.SnapshotService("btrfs").Walk(ctx, func(context.Context, snapshot.Info) error { return nil })
		}, "", keelv1.Scope{Namespace: "snaps", Lease: "l1", Snapshotter: "btrfs"}},
		{"SnapshotServiceOverMetadata", func(ctx context.Context) error {
			_, err := ci.SnapshotService("btrfs").Stat(withMD(ctx, keelv1.MetadataSnapshotter, "md"), "k")
			return err
		}, "", keelv1.Scope{Namespace: "ci", Snapshotter: "btrfs"}},
		{"SnapshotServiceDefault", func(ctx context.Context) error {
			_, err := ci.SnapshotService("").Stat(ctx, "k")
			return err
		}, "", keelv1.Scope{Namespace: "ci"}},
		{"ResolverServiceUnary", func(ctx context.Context) error {
			_, _, err := ci.ResolverService("docker").Resolve(ctx, "example.com/a:b")
			return err
		}, "", keelv1.Scope{Namespace: "ci", Resolver: "docker"}},
		{"ResolverServiceStream", func(ctx context.Context) error {
			rc, err := ci.ResolverService("docker").Fetch(ctx, "example.com/a:b", desc, 0)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			return err
		}, "", keelv1.Scope{Namespace: "ci", Resolver: "docker"}},
		{"Pull", func(ctx context.Context) error {
			_, err := ci.Pull(WithLease(ctx, "l1"), "example.com/a:b", WithPullUnpack,
				WithPullSnapshotter("native"), WithPullResolver("docker"))
			return err
		}, "Pull", keelv1.Scope{Namespace: "ci", Lease: "l1", Snapshotter: "native", Resolver: "docker"}},
		{"PullOptionsOverMetadata", func(ctx context.Context) error {
			ctx = withMD(withMD(ctx, keelv1.MetadataSnapshotter, "md"), keelv1.MetadataResolver, "md")
			_, err := ci.Pull(ctx, "example.com/a:b", WithPullSnapshotter("native"), WithPullResolver("docker"))
			return err
		}, "Pull", keelv1.Scope{Namespace: "ci", Snapshotter: "native", Resolver: "docker"}},
		{"PullDefaults", func(ctx context.Context) error {
			_, err := ci.Pull(ctx, "example.com/a:b")
			return err
		}, "Pull", keelv1.Scope{Namespace: "ci"}},
		{"Fetch", func(ctx context.Context) error {
			_, err := ci.Fetch(ctx, "example.com/a:b", desc, WithResolver("docker"))
			return err
		}, "Fetch", keelv1.Scope{Namespace: "ci", Resolver: "docker"}},
		{"Push", func(ctx context.Context) error {
			return ci.Push(ctx, "example.com/a:b", WithPushResolver("docker"))
		}, "Push", keelv1.Scope{Namespace: "ci", Resolver: "docker"}},
		{"Import", func(ctx context.Context) error {
			_, err := ci.Import(ctx, strings.NewReader("not a tar"), WithImportUnpack("native"))
			return err
		}, "Import", keelv1.Scope{Namespace: "ci", Snapshotter: "native"}},
		{"MountImage", func(ctx context.Context) error {
			return ci.MountImage(ctx, "img", t.TempDir(), WithMountSnapshotter("native"))
		}, "Mount", keelv1.Scope{Namespace: "ci", Snapshotter: "native"}},
		{"UnpackImage", func(ctx context.Context) error {
			_, err := ci.UnpackImage(ctx, "img", "native", "")
			return err
		}, "Unpack", keelv1.Scope{Namespace: "ci", Snapshotter: "native"}},
		// A container made under the caller's lease makes none of its own.
		{"NewContainerUnderLease", func(ctx context.Context) error {
			_, err := ci.NewContainer(WithLease(ctx, "l1"), "c1", WithSpec(nil))
			return err
		}, "Containers/Create", keelv1.Scope{Namespace: "ci", Lease: "l1"}},
		{"NewContainerUnderMetadataLease", func(ctx context.Context) error {
			_, err := ci.NewContainer(withMD(ctx, keelv1.MetadataLease, "md"), "c1", WithSpec(nil))
			return err
		}, "Containers/Create", keelv1.Scope{Namespace: "ci", Lease: "md"}},
	}
	keys := map[string]func(keelv1.Scope) string{
		keelv1.MetadataNamespace:   func(s keelv1.Scope) string { return s.Namespace },
		keelv1.MetadataLease:       func(s keelv1.Scope) string { return s.Lease },
		keelv1.MetadataSnapshotter: func(s keelv1.Scope) string { return s.Snapshotter },
		keelv1.MetadataResolver:    func(s keelv1.Scope) string { return s.Resolver },
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.take()
			if err := tt.call(t.Context()); err == nil {
				t.Fatal("call succeeded against a keeld that answers none")
			}
			calls := r.take()
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1: %v", len(calls), calls)
			}
			c := calls[0]
			if !strings.Contains(c.method, tt.method) {
				t.Fatalf("called %s, want %s", c.method, tt.method)
			}
			for key, field := range keys {
				want, got := field(tt.want), c.md.Get(key)
				switch {
				case want == "" && len(got) != 0:
					t.Errorf("%s: %s = %q, want none", c.method, key, got)
				case want != "" && (len(got) != 1 || got[0] != want):
					t.Errorf("%s: %s = %q, want [%q]", c.method, key, got, want)
				}
			}
		})
	}
}
