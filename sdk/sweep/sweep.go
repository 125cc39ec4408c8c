// Package sweep finds and removes what a killed process left in its own
// directories: mounts, temporary directories and sockets. Its owner names
// them by path patterns it alone makes (say <state>/pull/*), so nothing
// else is touched: a container's rootfs or a snapshotter's active mount
// matches no pattern and stays.
//
// keeld sweeps its state dir at start and `keel check` reports the same
// leftovers (core/check); a plugin sweeps its own dirs when it starts.
package sweep

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Kinds of leftover.
const (
	KindMount  = "mount"  // a mount whose mountpoint is, or is under, a matched path
	KindDir    = "dir"    // a matched directory
	KindSocket = "socket" // a matched unix socket
	KindFile   = "file"   // any other matched file
)

// Leftover is one thing a pattern matched.
type Leftover struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
}

func (l Leftover) String() string { return l.Kind + " " + l.Path }

// Find returns what the patterns (absolute filepath.Match globs) match:
// first the mounts at or under a matched path, deepest first, then the
// matched paths themselves. keep, when set, spares a path in use (the
// running process's own dirs); a mount under a kept path is spared too.
func Find(patterns []string, keep func(path string) bool) ([]Leftover, error) {
	for _, p := range patterns {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("sweep pattern %q is not absolute", p)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("sweep pattern %q: %w", p, err)
		}
	}
	spared := func(path string) bool {
		if keep == nil {
			return false
		}
		for p := path; ; p = filepath.Dir(p) {
			if keep(p) {
				return true
			}
			if p == "/" || p == "." {
				return false
			}
		}
	}
	mounts, err := mountinfo.GetMounts(func(info *mountinfo.Info) (skip, stop bool) {
		return matched(patterns, filepath.Clean(info.Mountpoint)) == "", false
	})
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var out []Leftover
	seen := map[string]bool{}
	for _, m := range mounts {
		if spared(m.Mountpoint) || seen[m.Mountpoint] {
			continue
		}
		seen[m.Mountpoint] = true
		out = append(out, Leftover{Kind: KindMount, Path: m.Mountpoint})
	}
	// Deepest first, so that each unmount leaves its parent unmountable.
	slices.SortStableFunc(out, func(a, b Leftover) int {
		return strings.Count(b.Path, "/") - strings.Count(a.Path, "/")
	})
	for _, p := range patterns {
		paths, _ := filepath.Glob(p) // the pattern was checked above
		for _, path := range paths {
			if spared(path) {
				continue
			}
			st, err := os.Lstat(path)
			if err != nil {
				continue // gone meanwhile
			}
			kind := KindFile
			switch {
			case st.IsDir():
				kind = KindDir
			case st.Mode()&fs.ModeSocket != 0:
				kind = KindSocket
			}
			out = append(out, Leftover{Kind: kind, Path: path})
		}
	}
	return out, nil
}

// matched returns the pattern that path, or one of its parents, matches.
func matched(patterns []string, path string) string {
	for _, pat := range patterns {
		depth := strings.Count(filepath.Clean(pat), "/")
		parts := strings.Split(path, "/")
		if len(parts)-1 < depth {
			continue
		}
		if ok, _ := filepath.Match(pat, strings.Join(parts[:depth+1], "/")); ok {
			return pat
		}
	}
	return ""
}

// Remove removes l. A mount is detached lazily (MNT_DETACH: a process that
// still uses it keeps it until done), every mount stacked on the path in
// turn. A directory or file is removed only once no mount is left at or
// under it, so a removal never reaches into a mounted filesystem.
func Remove(l Leftover) error {
	if l.Kind == KindMount {
		for {
			err := unix.Unmount(l.Path, unix.MNT_DETACH)
			switch {
			case err == nil:
				continue // another mount may be stacked on the same path
			case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
				return nil // no longer a mountpoint
			default:
				return &os.PathError{Op: "unmount", Path: l.Path, Err: err}
			}
		}
	}
	under, err := mountinfo.GetMounts(mountinfo.PrefixFilter(l.Path))
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	if len(under) > 0 {
		return fmt.Errorf("remove %s: %s is still mounted", l.Path, under[0].Mountpoint)
	}
	if err := os.RemoveAll(l.Path); err != nil {
		return err
	}
	return nil
}

// Sweep finds and removes the leftovers of the patterns, and returns what
// it removed. It goes on past a failure; the error joins every failure.
func Sweep(patterns []string, keep func(path string) bool) ([]Leftover, error) {
	found, err := Find(patterns, keep)
	if err != nil {
		return nil, err
	}
	var removed []Leftover
	var errs []error
	for _, l := range found {
		if err := Remove(l); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, l)
	}
	return removed, errors.Join(errs...)
}
