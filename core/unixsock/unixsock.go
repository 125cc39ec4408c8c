// Package unixsock makes the unix sockets keel serves on (keeld's API,
// keel-cri's CRI): owner uid:gid, mode 0660, replacing a socket a killed
// server left and refusing one that still answers or a path that holds
// anything but a socket.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Listen makes the socket at path, owned by uid:gid with mode 0660, and
// its directory (0711) when missing. who names the server in the
// refusal of a socket that still answers: AlreadyExists; a path holding
// something else is the operator's and is refused (FailedPrecondition).
func Listen(path string, uid, gid int, who string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is served by another %s: %w", path, who, errdefs.ErrAlreadyExists)
	}
	// Only a socket is replaced: a file that happens to be at the
	// configured path is the operator's, not keel's.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("socket %s: a %s is there, not a socket: %w", path, fileKind(fi.Mode()), errdefs.ErrFailedPrecondition)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Chown(path, uid, gid); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// fileKind names a file's type for an error.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m&os.ModeDevice != 0:
		return "device"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	}
	return "regular file"
}
