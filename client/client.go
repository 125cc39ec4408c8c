// Package client is the Go client library for embedding keel: it talks to
// keeld over its API socket.
//
//	c, err := client.New("/run/keel/keel.sock", client.WithNamespace("ci"))
//	if err != nil { … }
//	defer c.Close()
//	v, err := c.Version(ctx)
//
// The examples (New, Client.Pull, Client.NewContainer for a container run
// to its end, namespaces, leases) compile.
//
// Every call is scoped to a namespace, sent as gRPC metadata: the one set on
// the call's context with WithNamespaceContext, else the client's own
// (WithNamespace, "default" when unset). Errors keep their class across the
// hop: errdefs.IsNotFound(err) holds for a missing namespace.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
	"github.com/keel-runtime/keel/sdk/resolver"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// DefaultTimeout bounds how long New waits for keeld to answer.
const DefaultTimeout = 10 * time.Second

// Client is a connection to keeld. It is safe for concurrent use.
type Client struct {
	conn      *grpc.ClientConn
	namespace string
}

type options struct {
	namespace string
	timeout   time.Duration
	dialOpts  []grpc.DialOption
}

// Opt configures a Client.
type Opt func(*options) error

// WithNamespace sets the namespace of calls whose context names none.
func WithNamespace(ns string) Opt {
	return func(o *options) error {
		if ns == "" {
			return fmt.Errorf("namespace: empty name: %w", errdefs.ErrInvalidArgument)
		}
		o.namespace = ns
		return nil
	}
}

// WithTimeout bounds how long New waits for the connection to keeld
// (DefaultTimeout when unset). Zero connects lazily, at the first call.
func WithTimeout(d time.Duration) Opt {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("timeout %s: negative: %w", d, errdefs.ErrInvalidArgument)
		}
		o.timeout = d
		return nil
	}
}

// WithDialOptions adds gRPC dial options, e.g. more interceptors.
func WithDialOptions(opts ...grpc.DialOption) Opt {
	return func(o *options) error {
		o.dialOpts = append(o.dialOpts, opts...)
		return nil
	}
}

// New connects to keeld's API socket at address, a unix socket path
// ("unix://" prefix optional). Unavailable when keeld does not answer
// within the timeout, at once when nobody can (no socket, a stale one);
// PermissionDenied at once when this user may not open the socket.
func New(address string, opts ...Opt) (*Client, error) {
	o := options{namespace: keelv1.DefaultNamespace, timeout: DefaultTimeout}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	path := strings.TrimPrefix(address, "unix://")
	if path == "" {
		return nil, fmt.Errorf("keeld address: empty: %w", errdefs.ErrInvalidArgument)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if _, err := os.Stat(path); err != nil && o.timeout > 0 {
		// A missing socket is keeld not running: say so now, not after
		// the timeout.
		return nil, fmt.Errorf("keeld at %s: %w", path, dialCause(err))
	}

	c := &Client{namespace: o.namespace}
	dial := &dialer{path: path}
	dialOpts := append(host.DialOptions(),
		grpc.WithContextDialer(dial.dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(c.unaryScope),
		grpc.WithChainStreamInterceptor(c.streamScope),
	)
	dialOpts = append(dialOpts, o.dialOpts...)
	conn, err := grpc.NewClient("unix://"+path, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("keeld at %s: %w", path, err)
	}
	c.conn = conn
	if o.timeout > 0 {
		if err := waitReady(conn, dial, o.timeout); err != nil {
			conn.Close()
			return nil, fmt.Errorf("keeld at %s: %w", path, err)
		}
	}
	return c, nil
}

// dialer dials keeld's socket and keeps the last error, so that waitReady
// can tell a socket nobody will answer on from a keeld that is slow.
type dialer struct {
	path string
	mu   sync.Mutex
	err  error
}

func (d *dialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.path)
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
	return conn, err
}

// lastError is the last dial's error, nil after a successful dial.
func (d *dialer) lastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// permanent tells whether a dial error will not go away by waiting: the
// socket is gone, stale (nobody listens: refused), not a stream socket, or
// not ours to open.
func permanent(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ENOENT, syscall.ECONNREFUSED, syscall.EACCES, syscall.EPERM, syscall.EPROTOTYPE, syscall.ENOTSOCK} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// waitReady waits for conn to connect, at most timeout; a dial error that
// waiting cannot cure (see permanent) ends it at once, naming the cause.
func waitReady(conn *grpc.ClientConn, d *dialer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			if err := d.lastError(); permanent(err) {
				return dialCause(err)
			}
		}
		if !conn.WaitForStateChange(ctx, s) {
			if err := d.lastError(); err != nil {
				return fmt.Errorf("not connected after %s: %w", timeout, dialCause(err))
			}
			return fmt.Errorf("not connected after %s: keeld accepted the connection but did not answer (%s): %w", timeout, s, errdefs.ErrUnavailable)
		}
	}
}

// dialCause names what a dial error means for the user, classed:
// PermissionDenied for a socket this user may not open, else Unavailable.
func dialCause(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused (a stale socket: is keeld running?): %w", errdefs.ErrUnavailable)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		// errdefs.ErrPermissionDenied reads "permission denied".
		return fmt.Errorf("%w (uid %d may not open it: keeld's socket is open to keeld's grpc uid and gid only)", errdefs.ErrPermissionDenied, os.Getuid())
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("no such file (is keeld running?): %w", errdefs.ErrUnavailable)
	case errors.Is(err, syscall.EPROTOTYPE), errors.Is(err, syscall.ENOTSOCK):
		return fmt.Errorf("not a stream socket (%v): %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%v: %w", err, errdefs.ErrUnavailable)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the connection to keeld, for services this package does not wrap.
// The namespace interceptors apply to calls made on it.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Namespace is the namespace of calls whose context names none.
func (c *Client) Namespace() string { return c.namespace }

// Version describes keeld.
type Version struct {
	Version   string
	Revision  string
	GoVersion string
}

// Version asks keeld for its version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	resp, err := keelv1.NewVersionClient(c.conn).Version(ctx, &keelv1.VersionRequest{})
	if err != nil {
		return Version{}, err
	}
	return Version{Version: resp.Version, Revision: resp.Revision, GoVersion: resp.GoVersion}, nil
}

// Plugin is a plugin instance keeld runs.
type Plugin struct {
	Kind    string
	Name    string
	Path    string
	Version string
	Pid     int
	// State is "starting", "running", "restarting" or "failed".
	State        string
	Restarts     int
	Capabilities []string
	LastError    string
}

// Plugins lists the plugins keeld runs.
func (c *Client) Plugins(ctx context.Context) ([]Plugin, error) {
	resp, err := keelv1.NewPluginsClient(c.conn).List(ctx, &keelv1.ListPluginsRequest{})
	if err != nil {
		return nil, err
	}
	return pluginsFromProto(resp.Plugins), nil
}

func pluginsFromProto(ps []*keelv1.Plugin) []Plugin {
	out := make([]Plugin, len(ps))
	for i, p := range ps {
		out[i] = Plugin{
			Kind:         p.Kind,
			Name:         p.Name,
			Path:         p.Path,
			Version:      p.Version,
			Pid:          int(p.Pid),
			State:        p.State,
			Restarts:     int(p.Restarts),
			Capabilities: p.Capabilities,
			LastError:    p.LastError,
		}
	}
	return out
}

// ContentStore is keeld's content store, in the call's namespace.
func (c *Client) ContentStore() content.Store {
	return content.NewClient(c.conn)
}

// SnapshotService is the snapshotter name configured in keeld (keeld's
// default snapshotter when name is empty), in the call's namespace.
// ResolverService returns keeld's resolver plugin called name ("" for
// keeld's only one).
func (c *Client) ResolverService(name string) resolver.Resolver {
	if name == "" {
		return resolver.NewClient(c.conn)
	}
	return resolver.NewClient(scopedConn{cc: c.conn, scope: keelv1.Scope{Resolver: name}})
}

func (c *Client) SnapshotService(name string) snapshot.Snapshotter {
	if name == "" {
		return snapshot.NewClient(c.conn)
	}
	return snapshot.NewClient(scopedConn{cc: c.conn, scope: keelv1.Scope{Snapshotter: name}})
}
