package conformance

import (
	"context"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

var _ = addCLISuite(sdk.KindSnapshotter, func(t T, path string, opts ...Option) {
	Snapshotter(t, BinarySnapshotter(path, opts...), opts...)
})

// BinarySnapshotter opens the snapshotter plugin executable at path as
// keeld does (see Binary).
func BinarySnapshotter(path string, opts ...Option) Opener[snapshot.Snapshotter] {
	return Binary(path, sdk.KindSnapshotter, wrapSnapshotter, opts...)
}

// InProcessSnapshotter opens the snapshotter factory builds inside the test
// process, across gRPC (see InProcess).
func InProcessSnapshotter(factory snapshot.Factory, opts ...Option) Opener[snapshot.Snapshotter] {
	return InProcess(snapshot.Plugin("conformance", "dev", factory), wrapSnapshotter, opts...)
}

func wrapSnapshotter(conn grpc.ClientConnInterface, stop func() error) snapshot.Snapshotter {
	return &stoppingSnapshotter{Snapshotter: snapshot.NewClient(conn), stop: stop}
}

// stoppingSnapshotter is the sdk client whose Close ends the plugin.
type stoppingSnapshotter struct {
	snapshot.Snapshotter
	stop func() error
}

var (
	_ snapshot.Snapshotter = (*stoppingSnapshotter)(nil)
	_ snapshot.Cleaner     = (*stoppingSnapshotter)(nil)
)

func (s *stoppingSnapshotter) Cleanup(ctx context.Context) error {
	return s.Snapshotter.(snapshot.Cleaner).Cleanup(ctx)
}

func (s *stoppingSnapshotter) Close() error {
	err := s.Snapshotter.Close()
	if serr := s.stop(); err == nil {
		err = serr
	}
	return err
}

// Snapshotter runs the snapshotter suite against the plugins open opens.
func Snapshotter(t T, open Opener[snapshot.Snapshotter], opts ...Option) {
	t.Helper()
	runCases(t, snapshotCases(), open, buildOptions(opts))
}

func snapshotCases() []testCase[snapshot.Snapshotter] {
	return []testCase[snapshot.Snapshotter]{}
}
