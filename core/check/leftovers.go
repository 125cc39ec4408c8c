package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keel-runtime/keel/sdk/sweep"
)

// keeld's temporary things live in per-process dirs under its state dir,
// named by keeld's pid, so that a running keeld's are told from a killed
// one's:
//
//	<state>/pull/<pid>/layer-*        layers mounted while they are applied
//	<state>/sockets/<pid>/plugin-dir* the plugins' sockets (go-plugin)
//
// (not under <state>/plugins/, which holds the plugins' own state dirs).
//
// The pid is only a name: every such dir is stale once its keeld is gone,
// and keeld's start sweeps them all before making its own.

// PullDir is where the keeld of this process mounts layers to apply them.
func PullDir(state string) string { return filepath.Join(state, "pull", strconv.Itoa(os.Getpid())) }

// SocketDir is where the keeld of this process has its plugins make their
// sockets.
func SocketDir(state string) string {
	return filepath.Join(state, "sockets", strconv.Itoa(os.Getpid()))
}

// Leftovers are the patterns of keeld's temporary paths under state, for
// sweep: the per-process dirs above (and whatever an older keeld left in
// their parents).
func Leftovers(state string) []string {
	state = escape(filepath.Clean(state))
	return []string{state + "/pull/*", state + "/sockets/*"}
}

// escape quotes the characters filepath.Match gives a meaning.
func escape(path string) string {
	var b strings.Builder
	for _, r := range path {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Sweep removes what a killed keeld left under state, before this one
// makes its own dirs: keeld's start calls it.
func Sweep(state string) ([]sweep.Leftover, error) {
	return sweep.Sweep(Leftovers(state), nil)
}

// RemoveOwnDirs removes this process's dirs (PullDir, SocketDir) once
// empty: a keeld that stops leaves nothing behind.
func RemoveOwnDirs(state string) {
	os.Remove(PullDir(state))
	os.Remove(SocketDir(state))
}

// ownDirs spares this process's dirs.
func ownDirs(state string) func(string) bool {
	own := map[string]bool{PullDir(state): true, SocketDir(state): true}
	return func(path string) bool { return own[path] }
}

func (c *Checker) leftovers(context.Context) ([]Problem, error) {
	patterns := Leftovers(c.State)
	if c.Offline {
		if c.API != "" {
			// No keeld serves it: a socket there is stale.
			patterns = append(patterns, escape(filepath.Clean(c.API)))
		}
	}
	// This process's own dirs (keeld's, or those of `keeld check`) are in use.
	found, err := sweep.Find(patterns, ownDirs(c.State))
	if err != nil {
		return nil, err
	}
	var out []Problem
	for _, l := range found {
		var problem, fix string
		switch l.Kind {
		case sweep.KindMount:
			problem = "mount left by a keeld that was killed"
			fix = "unmount it (lazily)"
		case sweep.KindSocket:
			problem = "socket nobody serves"
			fix = "remove it"
		default:
			problem = fmt.Sprintf("temporary %s left by a keeld that was killed", l.Kind)
			fix = "remove it (once nothing is mounted under it)"
		}
		out = append(out, Problem{Kind: KindLeftover, Object: l.Path, Problem: problem, Fix: fix, Safe: true,
			repair: func(context.Context) error { return sweep.Remove(l) }})
	}
	return out, nil
}
