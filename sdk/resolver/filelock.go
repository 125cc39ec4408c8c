package resolver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A FetchToFile call crosses two processes: the caller's stream ends the
// moment it cancels, while the plugin may still be writing. So the SDK's
// server holds an exclusive flock on the file for the whole call, and the
// client, once its call ended, takes that lock before it returns: no
// write of the plugin's lands after FetchToFile returned (an ingest a
// failed pull left can be collected at once, its space with it).

// holdFile takes the lock a FetchToFile call holds while it writes path;
// release lets it go.
func holdFile(path string) (release func(), err error) {
	f, err := openForLock(path)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// fileLockPoll is how often waitFileReleased tries the lock.
const fileLockPoll = 5 * time.Millisecond

// waitFileReleased waits until no FetchToFile call holds path's lock (a
// file that is gone holds none), or until ctx ends.
func waitFileReleased(ctx context.Context, path string) error {
	f, err := openForLock(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return unix.Flock(int(f.Fd()), unix.LOCK_UN)
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the plugin still writes %s: %w", path, ctx.Err())
		case <-time.After(fileLockPoll):
		}
	}
}

// openForLock opens path to lock it; O_NONBLOCK so that a path that is
// not a regular file (which FetchToFile refuses) cannot hang the open.
func openForLock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}
