package server

import (
	"context"
	"path/filepath"

	"github.com/keel-runtime/keel/core/metadata"
)

// A task's log may be at a path its creator named (cio.Log.Path: the
// CRI's log_path) rather than in the container's log dir. keeld serves
// such a log (Logs.Read, attach) for as long as the task is there — the
// runtime's state is where the path is kept — but never removes it: the
// caller named the file and owns it (the kubelet removes a pod's logs
// itself). Once the task is deleted, Logs.Read reads the container's own
// log dir again.

// servedLogPath is the log Logs.Read serves for c: its task's
// caller-named log while the task is there, else c's own.
func (s *Server) servedLogPath(ctx context.Context, c metadata.Container) (string, error) {
	if rt, err := s.runtime(c.Runtime); err == nil {
		if tid, err := taskID(ctx, c.ID); err == nil {
			if st, err := rt.State(ctx, tid, ""); err == nil && st.IO.LogPath != "" {
				return st.IO.LogPath, nil
			}
		}
	}
	dir, err := s.containerLogDir(ctx, c.ID)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, containerLogName), nil
}
