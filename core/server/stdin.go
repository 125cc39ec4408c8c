package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// A task created with TaskIO.keep_stdin reads a FIFO in the container's
// state dir, which its runtime holds open (runtime.IO.KeepStdin) so that
// writers come and go: WriteStdin (keel task attach) writes to it, and
// only CloseIO ends the process's stdin.

// stdinFIFOName is the FIFO's name in the container's state dir.
const stdinFIFOName = "stdin"

// keptStdin makes (or finds) container id's stdin FIFO.
func (s *Server) keptStdin(ctx context.Context, id string) (string, error) {
	dir, err := s.containerStateDir(ctx, id)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, stdinFIFOName)
	if err := unix.Mkfifo(path, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("container %q: stdin fifo: %w", id, err)
	}
	return path, nil
}

// withKeptStdin gives io a stdin keeld holds, when in asks for one.
func (s *Server) withKeptStdin(ctx context.Context, id string, in *keelv1.TaskIO, io *runtime.IO) error {
	if !in.GetKeepStdin() {
		return nil
	}
	if io.Stdin != "" {
		return fmt.Errorf("container %q: keep_stdin with a stdin path of the caller's: %w", id, errdefs.ErrInvalidArgument)
	}
	path, err := s.keptStdin(ctx, id)
	if err != nil {
		return err
	}
	io.Stdin, io.KeepStdin = path, true
	return nil
}

func (ts tasksService) WriteStdin(stream grpc.ClientStreamingServer[keelv1.StdinChunk, emptypb.Empty]) error {
	ctx := stream.Context()
	chunk, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return stream.SendAndClose(&emptypb.Empty{})
	}
	if err != nil {
		return err
	}
	id := chunk.Id
	rt, tid, err := ts.route(ctx, id)
	if err != nil {
		return err
	}
	st, err := rt.State(ctx, tid, "")
	if err != nil {
		return err
	}
	dir, err := ts.s.containerStateDir(ctx, id)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, stdinFIFOName)
	if !st.IO.KeepStdin || st.IO.Stdin != path {
		return fmt.Errorf("task %q was not created with a stdin keeld keeps (keep_stdin): %w", id, errdefs.ErrFailedPrecondition)
	}
	// The runtime holds the read end: no reader means the task is gone.
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("task %q: its stdin is closed: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := f.Write(chunk.Data); err != nil {
			return fmt.Errorf("task %q: stdin: %v: %w", id, err, errdefs.ErrFailedPrecondition)
		}
		chunk, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&emptypb.Empty{})
		}
		if err != nil {
			return err
		}
	}
}
