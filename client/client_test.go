package client

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// seen records the keel metadata each call arrived with, by method.
type seen struct {
	mu    sync.Mutex
	calls map[string][]metadata.MD
}

func (s *seen) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string][]metadata.MD{}
	}
	s.calls[method] = append(s.calls[method], md)
}

// last returns the value of key in the last call to method ("" for none)
// and how many values it had.
func (s *seen) last(method, key string) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := s.calls[method]
	if len(calls) == 0 {
		return "", -1
	}
	vs := calls[len(calls)-1].Get(key)
	if len(vs) == 0 {
		return "", 0
	}
	return vs[0], len(vs)
}

// keeld is a stand-in for keeld's API services, in memory, enough to see
// what the client sends and that error classes come back.
type keeld struct {
	keelv1.UnimplementedVersionServer
	keelv1.UnimplementedPluginsServer
	keelv1.UnimplementedNamespacesServer

	revision string

	mu         sync.Mutex
	namespaces map[string]map[string]string
}

func (k *keeld) Version(context.Context, *keelv1.VersionRequest) (*keelv1.VersionResponse, error) {
	return &keelv1.VersionResponse{Version: "v0.1.0", Revision: k.revision, GoVersion: "go1.26"}, nil
}

func (k *keeld) List(context.Context, *keelv1.ListPluginsRequest) (*keelv1.ListPluginsResponse, error) {
	return &keelv1.ListPluginsResponse{Plugins: []*keelv1.Plugin{{
		Kind: "snapshotter", Name: "overlay", Path: "/usr/lib/keel/keel-snapshotter-overlay", Version: "v1",
		Pid: 42, State: "running", Restarts: 1, Capabilities: []string{"cleanup"},
	}}}, nil
}

type namespaces struct{ *keeld }

func (n namespaces) Create(_ context.Context, ns *keelv1.Namespace) (*keelv1.Namespace, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.namespaces[ns.Name]; ok {
		return nil, fmt.Errorf("namespace %q: %w", ns.Name, errdefs.ErrAlreadyExists)
	}
	n.namespaces[ns.Name] = maps.Clone(ns.Labels)
	return ns, nil
}

func (n namespaces) Get(_ context.Context, req *keelv1.GetNamespaceRequest) (*keelv1.Namespace, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	labels, ok := n.namespaces[req.Name]
	if !ok {
		return nil, fmt.Errorf("namespace %q: %w", req.Name, errdefs.ErrNotFound)
	}
	return &keelv1.Namespace{Name: req.Name, Labels: labels}, nil
}

func (n namespaces) List(context.Context, *keelv1.ListNamespacesRequest) (*keelv1.ListNamespacesResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	resp := &keelv1.ListNamespacesResponse{}
	for _, name := range slices.Sorted(maps.Keys(n.namespaces)) {
		resp.Namespaces = append(resp.Namespaces, &keelv1.Namespace{Name: name, Labels: n.namespaces[name]})
	}
	return resp, nil
}

func (n namespaces) Update(_ context.Context, req *keelv1.UpdateNamespaceRequest) (*keelv1.Namespace, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	labels, ok := n.namespaces[req.Namespace.Name]
	if !ok {
		return nil, fmt.Errorf("namespace %q: %w", req.Namespace.Name, errdefs.ErrNotFound)
	}
	for _, fp := range req.FieldPaths {
		key, ok := strings.CutPrefix(fp, "labels.")
		if !ok {
			return nil, fmt.Errorf("field path %q: %w", fp, errdefs.ErrInvalidArgument)
		}
		if v := req.Namespace.Labels[key]; v != "" {
			labels[key] = v
		} else {
			delete(labels, key)
		}
	}
	return &keelv1.Namespace{Name: req.Namespace.Name, Labels: labels}, nil
}

func (n namespaces) Delete(_ context.Context, req *keelv1.DeleteNamespaceRequest) (*keelv1.DeleteNamespaceResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.namespaces[req.Name]; !ok {
		return nil, fmt.Errorf("namespace %q: %w", req.Name, errdefs.ErrNotFound)
	}
	delete(n.namespaces, req.Name)
	return &keelv1.DeleteNamespaceResponse{}, nil
}

// snapshots answers Stat and Walk, naming the snapshotter the call chose.
type snapshots struct {
	snapshot.Snapshotter // the methods the tests do not call
}

func snapshotterOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(keelv1.MetadataSnapshotter); len(v) > 0 {
		return v[0]
	}
	return "default-snapshotter"
}

func (snapshots) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	return snapshot.Info{Name: key, Kind: snapshot.KindCommitted,
		Labels: map[string]string{"snapshotter": snapshotterOf(ctx)}}, nil
}

func (snapshots) Walk(ctx context.Context, fn snapshot.WalkFunc, _ ...string) error {
	return fn(ctx, snapshot.Info{Name: snapshotterOf(ctx)})
}

// blobs answers content Info and Walk.
type blobs struct {
	content.Store // the methods the tests do not call
}

func (blobs) Info(_ context.Context, dgst digest.Digest) (content.Info, error) {
	if dgst != digest.FromString("hello") {
		return content.Info{}, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
	}
	return content.Info{Digest: dgst, Size: 5}, nil
}

func (blobs) Walk(_ context.Context, fn content.WalkFunc, _ ...string) error {
	return fn(content.Info{Digest: digest.FromString("hello"), Size: 5})
}

// serve starts the stand-in keeld on a unix socket and returns its path
// and what it saw.
func serve(t *testing.T, k *keeld) (string, *seen) {
	t.Helper()
	dir, err := os.MkdirTemp("", "keel-client-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "keeld.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &seen{}
	// keeld's own server options, so its handlers here return plain
	// errors of their class as keeld's do.
	srv := grpc.NewServer(append(host.ServerOptions(),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.record(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			s.record(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}),
	)...)
	if k.namespaces == nil {
		k.namespaces = map[string]map[string]string{keelv1.DefaultNamespace: nil}
	}
	keelv1.RegisterVersionServer(srv, k)
	keelv1.RegisterPluginsServer(srv, k)
	keelv1.RegisterNamespacesServer(srv, namespaces{k})
	snapshot.RegisterServer(srv, func(context.Context) (snapshot.Snapshotter, error) { return snapshots{}, nil })
	content.RegisterServer(srv, func(context.Context) (content.Store, error) { return blobs{}, nil })
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return sock, s
}

func newClient(t *testing.T, sock string, opts ...Opt) *Client {
	t.Helper()
	c, err := New(sock, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const statMethod = "/keel.plugin.v1.Snapshotter/Stat"

func TestSnapshotService(t *testing.T) {
	sock, s := serve(t, &keeld{})
	c := newClient(t, sock)
	ctx := t.Context()

	info, err := c.SnapshotService("btrfs").Stat(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels["snapshotter"] != "btrfs" || info.Kind != snapshot.KindCommitted {
		t.Fatalf("Stat: %+v, want it served by btrfs", info)
	}
	var walked []string
	err = c.SnapshotService("overlay").Walk(ctx, func(_ context.Context, i snapshot.Info) error {
		walked = append(walked, i.Name)
		return nil
	})
	if err != nil || !slices.Equal(walked, []string{"overlay"}) {
		t.Fatalf("Walk: %v, %v; want it served by overlay", walked, err)
	}
	// No name: keeld picks its default, so the key is not sent at all.
	if _, err := c.SnapshotService("").Stat(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if v, n := s.last(statMethod, keelv1.MetadataSnapshotter); n != 0 {
		t.Fatalf("snapshotter %q sent for the default one", v)
	}
}

func TestVersionAndPlugins(t *testing.T) {
	// A revision above gRPC's default 4 MiB message bound arrives: the
	// client raised its bound.
	big := strings.Repeat("r", 6<<20)
	sock, _ := serve(t, &keeld{revision: big})
	c := newClient(t, sock)
	v, err := c.Version(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if v.Version != "v0.1.0" || v.Revision != big || v.GoVersion != "go1.26" {
		t.Fatalf("Version: %q %d bytes %q", v.Version, len(v.Revision), v.GoVersion)
	}
	ps, err := c.Plugins(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []Plugin{{Kind: "snapshotter", Name: "overlay", Path: "/usr/lib/keel/keel-snapshotter-overlay", Version: "v1",
		Pid: 42, State: "running", Restarts: 1, Capabilities: []string{"cleanup"}}}
	if len(ps) != 1 || !equalPlugin(ps[0], want[0]) {
		t.Fatalf("Plugins: %+v", ps)
	}
}

func equalPlugin(a, b Plugin) bool {
	return a.Kind == b.Kind && a.Name == b.Name && a.Path == b.Path && a.Version == b.Version && a.Pid == b.Pid &&
		a.State == b.State && a.Restarts == b.Restarts && slices.Equal(a.Capabilities, b.Capabilities) && a.LastError == b.LastError
}

func TestNamespaces(t *testing.T) {
	sock, _ := serve(t, &keeld{})
	ns := newClient(t, sock).Namespaces()
	ctx := t.Context()

	if _, err := ns.Create(ctx, "ci", map[string]string{"team": "infra"}); err != nil {
		t.Fatal(err)
	}
	got, err := ns.Get(ctx, "ci")
	if err != nil || got.Name != "ci" || got.Labels["team"] != "infra" {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	got, err = ns.Update(ctx, Namespace{Name: "ci", Labels: map[string]string{"tier": "gold"}}, "labels.tier", "labels.team")
	if err != nil || !maps.Equal(got.Labels, map[string]string{"tier": "gold"}) {
		t.Fatalf("Update: %+v, %v", got, err)
	}
	list, err := ns.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "ci" || list[1].Name != "default" {
		t.Fatalf("List: %+v, %v", list, err)
	}
	if err := ns.Delete(ctx, "ci"); err != nil {
		t.Fatal(err)
	}

	errs := []struct {
		name  string
		call  func() error
		class func(error) bool
	}{
		{"CreateAlreadyExists", func() error { _, err := ns.Create(ctx, "default", nil); return err }, errdefs.IsAlreadyExists},
		{"GetNotFound", func() error { _, err := ns.Get(ctx, "ci"); return err }, errdefs.IsNotFound},
		{"UpdateNotFound", func() error { _, err := ns.Update(ctx, Namespace{Name: "ci"}, "labels.a"); return err }, errdefs.IsNotFound},
		{"UpdateInvalidArgument", func() error { _, err := ns.Update(ctx, Namespace{Name: "default"}, "name"); return err }, errdefs.IsInvalidArgument},
		{"DeleteNotFound", func() error { return ns.Delete(ctx, "ci") }, errdefs.IsNotFound},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !tt.class(err) {
				t.Fatalf("wrong error class: %v", err)
			}
		})
	}
}

func TestNewFails(t *testing.T) {
	dir := t.TempDir()
	// A socket nobody serves: bound, never listening.
	dead := filepath.Join(dir, "dead.sock")
	fd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dead, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// A stale socket: its listener closed without removing the file, as
	// a killed keeld leaves it.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	tests := []struct {
		name  string
		addr  string
		opts  []Opt
		class func(error) bool
		cause string // in the message
	}{
		{"NoSocket", filepath.Join(dir, "missing.sock"), nil, errdefs.IsUnavailable, "no such file"},
		{"Stale", stale, nil, errdefs.IsUnavailable, "connection refused"},
		{"NotServing", dead, nil, errdefs.IsUnavailable, "not a stream socket"},
		{"EmptyAddress", "", nil, errdefs.IsInvalidArgument, ""},
		{"EmptyNamespace", dead, []Opt{WithNamespace("")}, errdefs.IsInvalidArgument, ""},
		{"NegativeTimeout", dead, []Opt{WithTimeout(-1)}, errdefs.IsInvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, err := New(tt.addr, tt.opts...)
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !tt.class(err) {
				t.Fatalf("wrong error class: %v", err)
			}
			if !strings.Contains(err.Error(), tt.cause) {
				t.Fatalf("error %q does not name the cause %q", err, tt.cause)
			}
			// With the default 10 s timeout: a socket nobody can answer
			// on fails at once, not after the timeout.
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("New took %s to fail", d)
			}
		})
	}

	t.Run("Lazy", func(t *testing.T) {
		// Without a timeout New does not wait; the first call fails.
		c, err := New(filepath.Join(dir, "missing.sock"), WithTimeout(0))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if _, err := c.Version(ctx); !errdefs.IsUnavailable(err) && !errdefs.IsDeadlineExceeded(err) {
			t.Fatalf("Version without keeld: %v, want Unavailable", err)
		}
	})
}
