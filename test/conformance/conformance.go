// Package conformance holds keel's plugin conformance suites, one exported
// function per plugin kind. Every plugin keel ships passes them in CI, and a
// third party runs them against its own plugin the same two ways:
//
//	// from go test, in process over go-plugin's in-memory gRPC
//	conformance.Snapshotter(conformance.Go(t), conformance.InProcess(native.New))
//	// or against the built binary, exactly as keeld launches it
//	conformance.Snapshotter(conformance.Go(t), conformance.Binary[snapshot.Snapshotter]("bin/keel-snapshotter-native"))
//
// `keel conformance --kind snapshotter PATH` runs the same cases from the CLI.
package conformance

import (
	"context"
	"regexp"
	"testing"
)

// T is the small testing interface the suites need. *testing.T fits through
// Go; the CLI brings its own.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	TempDir() string
	Context() context.Context
	// Run runs a case as a subtest, possibly in parallel with others.
	Run(name string, f func(T)) bool
}

// Go adapts *testing.T. Cases run in parallel.
func Go(t *testing.T) T { return goT{t} }

type goT struct{ *testing.T }

func (g goT) Run(name string, f func(T)) bool {
	return g.T.Run(name, func(t *testing.T) {
		t.Parallel()
		f(goT{t})
	})
}

// Opener opens a plugin of kind P with the given root (and a state dir of
// its own). Opening the same root again after closing is a restart.
type Opener[P any] func(ctx context.Context, t T, root string) (P, error)

// Options tune a suite run.
type Options struct {
	// Run, when set, runs only the cases whose name matches.
	Run *regexp.Regexp
	// RootDir, when set, is where the cases' roots are made (e.g. on btrfs).
	RootDir string
}

// Option changes Options.
type Option func(*Options)

// WithRun runs only the cases whose names match re.
func WithRun(re *regexp.Regexp) Option { return func(o *Options) { o.Run = re } }

// WithRootDir makes the cases' roots under dir.
func WithRootDir(dir string) Option { return func(o *Options) { o.RootDir = dir } }

// testCase is one conformance case: a name, the capabilities it needs (the
// case is skipped with a reason when the plugin lacks one) and a body.
type testCase[P any] struct {
	name  string
	needs []string
	body  func(ctx context.Context, t T, env *caseEnv[P])
}
