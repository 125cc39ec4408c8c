// Package difftest checks keel's layer applier (core/diff) against
// containerd's: it applies the same layers with each into its own
// directory and compares the two trees entry by entry.
//
// containerd's applier is its pkg/archive Apply with the default whiteout
// handling (a whiteout deletes, an opaque dir is emptied of what the layer
// did not write), which is what containerd runs for every snapshotter but
// overlay; its overlay applier writes the same tree as overlayfs upper-dir
// markers instead. ApplyKeel runs keel's applier onto a plain dir (as on
// the native and btrfs snapshotters), ApplyKeelOverlay through overlay
// mounts (as on the overlay snapshotter). Only tests import this package,
// so containerd never links into keel's binaries (test/layout checks).
//
// The tests run hand-written stacks, the differences kept on purpose
// (knownDifferences, TestKnownOverlayDifferences: each says why and pins
// exactly what differs), and stacks made by Generate: 100 seeds by default,
// KEEL_DIFFTEST_SEEDS=n for more, and FuzzApplyDifferential for a fuzzer
// (go test -fuzz FuzzApplyDifferential -fuzzminimizetime 10x: an exec
// takes tens of ms, so the default minimization stalls for a minute).
//
// The trees are compared with test/fstree (CompareDirs; its package doc
// says what it compares).
package difftest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/keel-runtime/keel/core/diff"
	"github.com/keel-runtime/keel/sdk/mount"
)

// ApplyReference applies the layers (gzip, zstd or plain tars, lowest
// first) onto dir with containerd's applier.
func ApplyReference(ctx context.Context, dir string, layers ...io.Reader) error {
	// containerd logs each xattr it ignores; keep test output for failures.
	quiet := logrus.New()
	quiet.Out = io.Discard
	ctx = log.WithLogger(ctx, logrus.NewEntry(quiet))
	for i, l := range layers {
		r, err := compression.DecompressStream(l)
		if err != nil {
			return fmt.Errorf("containerd: layer %d: %w", i, err)
		}
		_, err = archive.Apply(ctx, dir, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("containerd: layer %d: %w", i, err)
		}
	}
	return nil
}

// ApplyKeel applies the layers onto dir with keel's applier (core/diff).
func ApplyKeel(ctx context.Context, dir string, layers ...io.Reader) error {
	for i, l := range layers {
		if _, err := diff.Apply(ctx, dir, l); err != nil {
			return fmt.Errorf("keel: layer %d: %w", i, err)
		}
	}
	return nil
}

// ApplyKeelOverlay applies the layers with keel's applier the way it runs
// on keel's overlay snapshotter: the first onto a plain dir, each other
// through an overlay mount (index=off) of its own upper dir over the
// layers below, so that overlayfs turns deletions into its whiteouts and
// opaque dirs. The layers' dirs are made in work. It returns the dir that
// shows the stack (the first layer's dir, or a read-only overlay mount of
// them all) and a func that unmounts it; on error nothing stays mounted.
func ApplyKeelOverlay(ctx context.Context, work string, layers ...io.Reader) (view string, unmount func() error, err error) {
	nop := func() error { return nil }
	var uppers []string // top first, as lowerdir lists them
	for i, l := range layers {
		upper := filepath.Join(work, fmt.Sprintf("%d", i))
		if err := os.Mkdir(upper, 0o755); err != nil {
			return "", nil, err
		}
		target := upper
		if i > 0 {
			target = filepath.Join(work, fmt.Sprintf("%d-mnt", i))
			wd := filepath.Join(work, fmt.Sprintf("%d-work", i))
			for _, d := range []string{target, wd} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return "", nil, err
				}
			}
			if err := mount.Overlay(uppers, upper, wd, "index=off").Mount(target); err != nil {
				return "", nil, err
			}
		}
		_, err := diff.Apply(ctx, target, l)
		if i > 0 {
			if uerr := mount.Unmount(target); err == nil {
				err = uerr
			}
		}
		if err != nil {
			return "", nil, fmt.Errorf("keel on overlay: layer %d: %w", i, err)
		}
		uppers = append([]string{upper}, uppers...)
	}
	if len(uppers) < 2 {
		return uppers[0], nop, nil
	}
	view = filepath.Join(work, "view")
	if err := os.Mkdir(view, 0o755); err != nil {
		return "", nil, err
	}
	if err := mount.Overlay(uppers, "", "", "index=off").Mount(view); err != nil {
		return "", nil, err
	}
	return view, func() error { return mount.Unmount(view) }, nil
}

// Files opens layer files for ApplyReference and ApplyKeel; close closes
// them all.
func Files(paths ...string) (layers []io.Reader, close func(), err error) {
	var files []*os.File
	close = func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			close()
			return nil, nil, err
		}
		files = append(files, f)
		layers = append(layers, f)
	}
	return layers, close, nil
}
