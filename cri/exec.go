package cri

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

const (
	// maxExecSyncOutput caps each of ExecSync's stdout and stderr, as
	// containerd's CRI does: a probe's output is for a human to read.
	maxExecSyncOutput = 16 << 20
	// execDrainTimeout bounds the wait for an exec's output after it was
	// killed: children it left may hold the pipes open.
	execDrainTimeout = 2 * time.Second
)

// execStreams are the caller's ends of an exec'd process's stdio; nil
// ones are not connected.
type execStreams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            bool
	resize         <-chan remotecommandserver.TerminalSize
}

// execInContainer runs cmd in the running task of container id, with the
// process spec of the container (its user, env, cwd, capabilities) and
// the streams s, until it exits or ctx ends (then it is killed). It
// returns the exit code; the process is deleted either way.
func execInContainer(ctx context.Context, c *client.Client, id string, cmd []string, s execStreams) (int, error) {
	if len(cmd) == 0 {
		return 0, fmt.Errorf("exec in %q: no command: %w", id, errdefs.ErrInvalidArgument)
	}
	ct, t, err := loadTask(ctx, c, id)
	if err != nil {
		return 0, err
	}
	spec := ct.Info().Spec
	if spec == nil || spec.Process == nil {
		return 0, fmt.Errorf("container %q has no process spec: %w", id, errdefs.ErrFailedPrecondition)
	}
	p := *spec.Process
	p.Args = cmd
	p.Terminal = s.tty
	opts := []cio.Opt{cio.WithStreams(s.stdin, s.stdout, s.stderr)}
	if s.tty {
		opts = append(opts, cio.WithTerminal)
	}
	execID, err := newExecID()
	if err != nil {
		return 0, err
	}
	// The process outlives a cancelled ctx long enough to be killed and
	// deleted.
	bg := context.WithoutCancel(ctx)
	proc, err := t.Exec(bg, execID, &p, cio.NewCreator(opts...))
	if err != nil {
		return 0, err
	}
	defer proc.Delete(bg)
	statusC, err := proc.Wait(bg)
	if err != nil {
		return 0, err
	}
	if err := proc.Start(bg); err != nil {
		return 0, err
	}
	if s.resize != nil {
		go func() {
			for size := range s.resize {
				proc.Resize(bg, uint32(size.Width), uint32(size.Height))
			}
		}()
	}
	select {
	case st := <-statusC:
		if st.Err != nil {
			return 0, st.Err
		}
		return int(st.Code), nil
	case <-ctx.Done():
	}
	// Timed out or the caller went away: kill it, give its output a
	// moment to drain, then Delete closes the pipes.
	if err := proc.Kill(bg, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		return 0, fmt.Errorf("kill exec %s in %q: %w", execID, id, err)
	}
	select {
	case <-statusC:
	case <-time.After(execDrainTimeout):
		if _, err := proc.Status(bg); err != nil {
			return 0, err
		}
	}
	return 0, ctx.Err()
}

func newExecID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "cri-exec-" + hex.EncodeToString(b), nil
}

// ExecSync runs a command to completion (or until its timeout, when it is
// killed) and returns its output and exit code.
func (r *runtimeService) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if req.Timeout < 0 {
		return nil, fmt.Errorf("timeout %ds is negative: %w", req.Timeout, errdefs.ErrInvalidArgument)
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout)*time.Second)
		defer cancel()
	}
	stdout, stderr := &capped{max: maxExecSyncOutput}, &capped{max: maxExecSyncOutput}
	code, err := execInContainer(ctx, r.s.c, req.ContainerId, req.Cmd, execStreams{stdout: stdout, stderr: stderr})
	if err != nil && ctx.Err() != nil && req.Timeout > 0 {
		return nil, status.Errorf(codes.DeadlineExceeded, "command %q timed out after %ds and was killed", req.Cmd, req.Timeout)
	}
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(code)}, nil
}

// Exec, Attach and PortForward hand the kubelet a URL of the streaming
// server, which serves the stream (streaming.go).
func (r *runtimeService) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := r.s.checkContainer(ctx, req.ContainerId); err != nil {
		return nil, err
	}
	return r.s.stream.GetExec(req)
}

func (r *runtimeService) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := r.s.checkContainer(ctx, req.ContainerId); err != nil {
		return nil, err
	}
	return r.s.stream.GetAttach(req)
}

func (r *runtimeService) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if err := r.s.checkContainer(ctx, req.PodSandboxId); err != nil {
		return nil, err
	}
	return r.s.stream.GetPortForward(req)
}

// checkContainer fails with NotFound unless id is a keel container with
// a task, so the kubelet learns of a wrong id before it opens a stream.
func (s *Server) checkContainer(ctx context.Context, id string) error {
	if s.stream == nil {
		return fmt.Errorf("keel-cri runs no streaming server: %w", errdefs.ErrUnavailable)
	}
	_, _, err := loadTask(ctx, s.c, id)
	return err
}

// loadTask loads keel container id and its task.
func loadTask(ctx context.Context, c *client.Client, id string) (*client.Container, *client.Task, error) {
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	t, err := ct.Task(ctx)
	if err != nil {
		return nil, nil, err
	}
	return ct, t, nil
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
