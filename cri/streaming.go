package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// StartStreaming starts Kubernetes' streaming server (k8s.io/cri-streaming)
// on address (host:port, port 0 for a free one), serving the URLs that
// Exec, Attach and PortForward return; it returns the address it listens
// on. Stop stops it with the gRPC server.
func (s *Server) StartStreaming(address string) (string, error) {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return "", fmt.Errorf("streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	// The URLs name the port actually bound (address may say 0).
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	srv, err := streaming.NewServer(cfg, &streamRuntime{c: s.c, logger: s.logger.Named("stream")})
	if err != nil {
		l.Close()
		return "", err
	}
	s.stream = srv
	s.streamHTTP = &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := s.streamHTTP.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("streaming server ended", "error", err)
		}
	}()
	return cfg.Addr, nil
}

// streamRuntime serves the streams over keeld's client.
type streamRuntime struct {
	c      *client.Client
	logger hclog.Logger
}

// Exec runs cmd in the container's task with the stream's stdio; a
// non-zero exit is an ExitError, which the library reports to the client.
func (r *streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	s := execStreams{stdin: in, tty: tty, resize: resize}
	// Typed nils would look connected.
	if out != nil {
		s.stdout = out
	}
	if errw != nil {
		s.stderr = errw
	}
	code, err := execInContainer(ctx, r.c, id, cmd, s)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: code}
	}
	return nil
}

// Attach follows the output of the container's task from now on (from
// the log keeld keeps of it) until the task exits, and sends stdin to it
// when keeld keeps the task's stdin open.
func (r *streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	ct, t, err := loadTask(ctx, r.c, id)
	if err != nil {
		return err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return err
	}
	if st.Log == nil {
		return fmt.Errorf("container %q: its task's output is not kept in its log: %w", id, errdefs.ErrFailedPrecondition)
	}
	if resize != nil {
		go func() {
			for size := range resize {
				t.Resize(ctx, uint32(size.Width), uint32(size.Height))
			}
		}()
	}
	w := client.NewLogWriter(io.Discard, io.Discard, false)
	if out != nil {
		w.Stdout = out
	}
	if errw != nil {
		w.Stderr = errw
	}
	started := func() {}
	if in != nil && st.KeepStdin {
		started = func() {
			go func() {
				err := t.WriteStdin(ctx, in)
				if err != nil && ctx.Err() == nil {
					r.logger.Debug("attach stdin ended", "container", id, "error", err)
				}
				if err == nil && ct.Info().Labels[LabelStdinOnce] == "true" {
					// stdin_once: the first attach's end is the process's EOF.
					if err := t.CloseIO(ctx); err != nil {
						r.logger.Debug("closing stdin after the first attach", "container", id, "error", err)
					}
				}
			}()
		}
	}
	return ct.Logs(ctx, w.Write, client.WithFollow, client.WithTail(0), client.WithStarted(started))
}

// PortForward connects stream to 127.0.0.1:port in the network namespace
// of the sandbox's task, copying both ways until either side ends.
func (r *streamRuntime) PortForward(ctx context.Context, id string, port int32, stream io.ReadWriteCloser) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d: %w", port, errdefs.ErrInvalidArgument)
	}
	_, t, err := loadTask(ctx, r.c, id)
	if err != nil {
		return err
	}
	// The task's own namespace, whichever way keeld made or pinned it.
	netns := fmt.Sprintf("/proc/%d/ns/net", t.Pid())
	conn, err := dialInNetns(ctx, netns, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port forward to %q port %d: %w", id, port, err)
	}
	defer conn.Close()
	toConn := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stream)
		// The client is done sending: the server sees EOF and answers.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		toConn <- err
	}()
	fromConn := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, conn)
		fromConn <- err
	}()
	select {
	case err = <-fromConn:
	case <-ctx.Done():
		err = ctx.Err()
	}
	return err
}

// dialInNetns dials a TCP address from inside the network namespace at
// nsPath: a socket belongs to the namespace it was made in, so it is made
// on an OS thread that joined it and used from any thread after. The
// thread stays locked, so Go ends it rather than reuse it elsewhere.
func dialInNetns(ctx context.Context, nsPath, address string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: fmt.Errorf("network namespace %s: %w", nsPath, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("join network namespace %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", address)
		ch <- result{conn, err}
	}()
	res := <-ch
	return res.conn, res.err
}
