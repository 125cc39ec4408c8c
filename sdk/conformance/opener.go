package conformance

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/host"
)

// Wrap turns a connection to a plugin configured on root into the kind's Go
// interface. stop ends the plugin (kills the process, or stops the
// in-process server and closes the implementation); the returned value's
// Close must call it. It is idempotent.
type Wrap[P any] func(conn grpc.ClientConnInterface, root string, stop func() error) P

// Binary opens the plugin executable at path, launched exactly as keeld
// launches it (host.Launch: go-plugin, AutoMTLS, its own process group),
// configured with root, a state dir kept per root, and Options.Config. The
// process is killed when the instance is closed or the case ends.
func Binary[P any](path, kind string, wrap Wrap[P], opts ...Option) Opener[P] {
	o := NewOptions(opts)
	states := &stateDirs{}
	return func(ctx context.Context, t T, root string) (P, error) {
		t.Helper()
		var zero P
		state, err := states.get(t, root)
		if err != nil {
			return zero, err
		}
		proc, err := host.Launch(ctx, host.LaunchConfig{
			Path:     path,
			Kind:     kind,
			Instance: kind + "." + filepath.Base(path),
			Logger:   caseLogger(t, o.Logger),
			// The socket goes in the case's state dir, removed with it.
			SocketDir: state,
		})
		if err != nil {
			return zero, err
		}
		stop := onceFunc(func() error {
			proc.Kill()
			return nil
		})
		t.Cleanup(func() { stop() })
		caps, err := proc.Configure(ctx, root, state, SuiteConfig(ctx, o.Config))
		if err != nil {
			stop()
			return zero, err
		}
		ReportCapabilities(t, caps)
		return wrap(proc.Conn(), root, stop), nil
	}
}

// InProcess opens the plugin def describes inside the test process, served
// over in-memory gRPC with the kind's real server and client glue, so error
// classes, streams and message sizes cross the wire as they do from keeld.
// Configure is done as sdk.Serve does it: root and state made, def.New
// called with them and Options.Config, capabilities collected.
func InProcess[P any](def sdk.Definition, wrap Wrap[P], opts ...Option) Opener[P] {
	o := NewOptions(opts)
	states := &stateDirs{}
	return func(ctx context.Context, t T, root string) (P, error) {
		t.Helper()
		var zero P
		state, err := states.get(t, root)
		if err != nil {
			return zero, err
		}
		if err := os.MkdirAll(root, 0o700); err != nil {
			return zero, err
		}
		instance := def.Kind + "." + def.Name
		impl, err := def.New(ctx, sdk.Env{
			Instance: instance,
			Root:     root,
			State:    state,
			Logger:   caseLogger(t, o.Logger).Named(instance),
			Config:   SuiteConfig(ctx, o.Config),
		})
		if err != nil {
			return zero, fmt.Errorf("%s: configure: %w", instance, err)
		}
		caps := def.CapabilitiesFor(impl)

		srv := grpc.NewServer(host.ServerOptions()...)
		def.Register(srv, func() (any, error) { return impl, nil })
		lis := bufconn.Listen(1 << 20)
		go srv.Serve(lis)
		conn, err := grpc.NewClient("passthrough:///"+instance, append(host.DialOptions(),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
		)...)
		if err != nil {
			srv.Stop()
			impl.Close()
			return zero, err
		}
		stop := onceFunc(func() error {
			conn.Close()
			srv.Stop()
			return impl.Close()
		})
		t.Cleanup(func() { stop() })
		ReportCapabilities(t, caps)
		return wrap(conn, root, stop), nil
	}
}

// onceFunc runs f once and returns its first result every time.
func onceFunc(f func() error) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = f() })
		return err
	}
}

// stateDirs keeps one short state dir per root, so a restart finds the
// same one (as with keeld) and unix sockets in it stay under the path limit.
type stateDirs struct {
	mu   sync.Mutex
	dirs map[string]string
}

func (s *stateDirs) get(t T, root string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dir, ok := s.dirs[root]; ok {
		return dir, nil
	}
	dir, err := os.MkdirTemp("", "keel-state-")
	if err != nil {
		return "", err
	}
	if s.dirs == nil {
		s.dirs = map[string]string{}
	}
	s.dirs[root] = dir
	t.Cleanup(func() {
		s.mu.Lock()
		delete(s.dirs, root)
		s.mu.Unlock()
		os.RemoveAll(dir)
	})
	return dir, nil
}

// caseLogger returns logger, or one that keeps the plugin's log and prints
// it to the case's log if the case fails.
func caseLogger(t T, logger hclog.Logger) hclog.Logger {
	if logger != nil {
		return logger
	}
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() && buf.Len() > 0 {
			t.Logf("plugin log:\n%s", buf.String())
		}
	})
	return hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug})
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
