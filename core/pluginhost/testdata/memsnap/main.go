// Command memsnap is a test plugin: an in-memory snapshotter. Stat of the key
// "block" and Walk with the filter "block" hang until the call is cancelled,
// so that tests can kill the process under a call in flight; they create the
// files stat-blocked and walk-blocked in the root once they hang. Stat of
// "wedge" makes the process stop answering while it still runs: from then
// on it shuts down every connected socket it has (the listener stays, so the
// process lives on), as a wedged server would answer nothing. Its config
// takes one key, greeting, which it writes to the file greeting in its root.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

func main() { sdk.Serve(snapshot.Plugin("mem", "0.1.0", newMem)) }

type mem struct {
	env sdk.Env
	mu  sync.Mutex
	m   map[string]snapshot.Info
}

var _ snapshot.Snapshotter = (*mem)(nil)

func newMem(_ context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	var cfg struct {
		Greeting string `json:"greeting"`
	}
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	if cfg.Greeting != "" {
		if err := os.MkdirAll(env.Root, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(env.Root, "greeting"), []byte(cfg.Greeting), 0o600); err != nil {
			return nil, err
		}
	}
	env.Logger.Info("memory snapshotter ready", "root", env.Root)
	return &mem{env: env, m: map[string]snapshot.Info{}}, nil
}

func (s *mem) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	if key == "wedge" {
		go wedge()
		return snapshot.Info{}, nil
	}
	if key == "block" {
		s.mark("stat-blocked")
		<-ctx.Done()
		return snapshot.Info{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.m[key]
	if !ok {
		return snapshot.Info{}, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	return info, nil
}

func (s *mem) Update(ctx context.Context, info snapshot.Info, _ ...string) (snapshot.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[info.Name]
	if !ok {
		return snapshot.Info{}, fmt.Errorf("snapshot %q: %w", info.Name, errdefs.ErrNotFound)
	}
	cur.Labels, cur.Updated = info.Labels, time.Now()
	s.m[info.Name] = cur
	return cur, nil
}

func (s *mem) Usage(ctx context.Context, key string) (snapshot.Usage, error) {
	_, err := s.Stat(ctx, key)
	return snapshot.Usage{}, err
}

func (s *mem) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	if _, err := s.Stat(ctx, key); err != nil {
		return nil, err
	}
	return []mount.Mount{{Type: "bind", Source: s.env.Root, Options: []string{"rbind"}}}, nil
}

func (s *mem) create(kind snapshot.Kind, key, parent string, opts []snapshot.Opt) ([]mount.Mount, error) {
	info, err := snapshot.ApplyOpts(opts...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
	}
	info.Kind, info.Name, info.Parent, info.Created, info.Updated = kind, key, parent, time.Now(), time.Now()
	s.m[key] = info
	return []mount.Mount{{Type: "bind", Source: s.env.Root, Options: []string{"rbind"}}}, nil
}

func (s *mem) Prepare(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(snapshot.KindActive, key, parent, opts)
}

func (s *mem) View(ctx context.Context, key, parent string, opts ...snapshot.Opt) ([]mount.Mount, error) {
	return s.create(snapshot.KindView, key, parent, opts)
}

func (s *mem) Commit(ctx context.Context, name, key string, opts ...snapshot.Opt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.m[key]
	if !ok {
		return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	delete(s.m, key)
	info.Name, info.Kind = name, snapshot.KindCommitted
	s.m[name] = info
	return nil
}

func (s *mem) Remove(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok {
		return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	delete(s.m, key)
	return nil
}

func (s *mem) Walk(ctx context.Context, fn snapshot.WalkFunc, filters ...string) error {
	s.mu.Lock()
	var infos []snapshot.Info
	for _, info := range s.m {
		infos = append(infos, info)
	}
	s.mu.Unlock()
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	if len(filters) == 1 && filters[0] == "block" {
		s.mark("walk-blocked")
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *mem) Close() error { return nil }

// wedge shuts the process's connected sockets down, again and again.
func wedge() {
	time.Sleep(50 * time.Millisecond) // let the reply to Stat go
	for {
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			fd, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			link, _ := os.Readlink("/proc/self/fd/" + e.Name())
			if !strings.HasPrefix(link, "socket:") {
				continue
			}
			if listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && listening == 0 {
				unix.Shutdown(fd, unix.SHUT_RDWR)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *mem) mark(name string) {
	if err := os.WriteFile(filepath.Join(s.env.Root, name), nil, 0o600); err != nil {
		s.env.Logger.Error("mark failed", "error", err)
	}
}

// Cleanup makes the plugin announce the cleanup capability.
func (s *mem) Cleanup(context.Context) error { return nil }

var _ snapshot.Cleaner = (*mem)(nil)
