// Package conformance holds keel's plugin conformance suites, one exported
// function per plugin kind. Every plugin keel ships passes them in CI, and a
// third party runs them against its own plugin the same two ways:
//
//	// from go test, in process but across gRPC, as keeld would call it
//	snapshottest.Run(conformance.Go(t), snapshottest.InProcess(native.New))
//	// or against the built binary, launched exactly as keeld launches it
//	snapshottest.Run(conformance.Go(t), snapshottest.Binary("bin/keel-snapshotter-native"))
//
// `keel conformance --kind snapshotter PATH` runs the same cases from the
// CLI through RunCLI.
//
// # Cases
//
// A suite is a table of cases: a stable CamelCase name, the capabilities
// the case needs (it is skipped, with the reason, when the plugin lacks
// one) and a body. Each case gets a fresh root and its own plugin instance;
// cases are independent and run in parallel under go test. A case that
// needs root or a kernel feature skips with the reason, or fails when
// KEEL_TEST_STRICT=1.
//
// # Openers
//
// An Opener starts a plugin on a root. Opening the same root again after
// the previous instance was closed is a restart: the plugin must find what
// it stored. Openers report the capabilities the plugin's Configure
// answered with ReportCapabilities; the stock ones (Binary, InProcess and
// their per-kind forms) do.
package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// T is the small testing interface the suites need. *testing.T fits through
// Go; the CLI brings its own (RunCLI).
type T interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	TempDir() string
	// Context is canceled just before the Cleanup functions run.
	Context() context.Context
	// Run runs f as a subtest named name, possibly in parallel with others,
	// and reports whether it passed.
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

// Opener starts a plugin of kind P on root (and a state dir of its own). It
// is called with a fresh root per case; called again with the same root
// after the previous instance was closed, it is a restart. Instances are
// closed through io.Closer; an opener also makes sure, with t.Cleanup, that
// nothing it started outlives the case.
type Opener[P any] func(ctx context.Context, t T, root string) (P, error)

// Options tune a suite run and the stock openers.
type Options struct {
	// Run, when set, runs only the cases whose name matches.
	Run *regexp.Regexp
	// RootDir, when set, is where the cases' roots are made (e.g. on btrfs).
	RootDir string
	// Config is the plugin's `config {}` block as JSON, handed to Configure
	// by the stock openers ("{}" when empty).
	Config json.RawMessage
	// Logger receives the plugin's log; by default the stock openers keep it
	// and print it to the case's log when the case fails.
	Logger hclog.Logger

	// CaseConfig, set by a suite that starts its own servers (the resolver
	// suite's registries), reaches the openers through the case's context
	// (SuiteConfig).
	CaseConfig json.RawMessage
}

type suiteConfigKey struct{}

// SuiteConfig returns the plugin config a suite made for the case ctx
// belongs to (the resolver suite's, naming the registries it started), or
// def when there is none. The stock openers hand it to Configure in place
// of Options.Config; an Opener of one's own should do the same.
func SuiteConfig(ctx context.Context, def json.RawMessage) json.RawMessage {
	if c, ok := ctx.Value(suiteConfigKey{}).(json.RawMessage); ok {
		return c
	}
	return def
}

// Option changes Options.
type Option func(*Options)

// WithRun runs only the cases whose names match re.
func WithRun(re *regexp.Regexp) Option { return func(o *Options) { o.Run = re } }

// WithRootDir makes the cases' roots under dir.
func WithRootDir(dir string) Option { return func(o *Options) { o.RootDir = dir } }

// WithConfig hands the plugin config (JSON) at Configure.
func WithConfig(config json.RawMessage) Option { return func(o *Options) { o.Config = config } }

// WithLogger sends the plugin's log to logger.
func WithLogger(logger hclog.Logger) Option { return func(o *Options) { o.Logger = logger } }

func NewOptions(opts []Option) Options {
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// capabilityReporter is implemented by the T the runner hands to openers.
type capabilityReporter interface {
	reportCapabilities(caps []string)
}

// ReportCapabilities tells the suite which capabilities the plugin opened
// for t announced (from its Configure response). Openers call it; it does
// nothing outside a suite.
func ReportCapabilities(t T, caps []string) {
	if r, ok := t.(capabilityReporter); ok {
		r.reportCapabilities(caps)
	}
}

// openT is the T an Opener gets from the runner: it records capabilities.
type openT struct {
	T
	env interface{ setCaps([]string) }
}

func (o openT) reportCapabilities(caps []string) { o.env.setCaps(caps) }

// Case is one conformance case: a stable CamelCase name, the
// capabilities it needs and a body. The body gets a plugin opened on a
// fresh root in env.
type Case[P any] struct {
	Name  string
	Needs []string
	Body  func(ctx context.Context, t T, env *Env[P])
}

// Env is what a case body works with: the plugin, its root and the
// opener, to restart it.
type Env[P any] struct {
	// P is the plugin instance currently open on Root.
	P      P
	Root   string
	opener Opener[P]

	mu   sync.Mutex
	caps []string
}

func (e *Env[P]) setCaps(caps []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.caps = append([]string(nil), caps...)
}

// Has reports whether the plugin announced capability c.
func (e *Env[P]) Has(c string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.caps, c)
}

// Close closes the current instance (through io.Closer).
func (e *Env[P]) Close() error {
	if c, ok := any(e.P).(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Reopen closes the current instance and opens the same root again: the
// restart check. The new instance replaces P.
func (e *Env[P]) Reopen(ctx context.Context, t T) (P, error) {
	t.Helper()
	if err := e.Close(); err != nil {
		var zero P
		return zero, fmt.Errorf("close before reopen: %w", err)
	}
	p, err := e.opener(ctx, openT{T: t, env: e}, e.Root)
	if err != nil {
		var zero P
		return zero, err
	}
	e.P = p
	return p, nil
}

// RunCases runs each case selected by opts as a subtest of t: a fresh root,
// the plugin opened on it, skipped when a needed capability is missing, the
// body, and the plugin closed at the end. Every kind's suite calls it.
func RunCases[P any](t T, cases []Case[P], open Opener[P], opts Options) {
	t.Helper()
	for _, tc := range cases {
		if opts.Run != nil && !opts.Run.MatchString(tc.Name) {
			continue
		}
		t.Run(tc.Name, func(t T) {
			ctx := t.Context()
			if opts.CaseConfig != nil {
				ctx = context.WithValue(ctx, suiteConfigKey{}, opts.CaseConfig)
			}
			env := &Env[P]{Root: caseRoot(t, opts.RootDir), opener: open}
			p, err := open(ctx, openT{T: t, env: env}, env.Root)
			if err != nil {
				t.Fatalf("open plugin on %s: %v", env.Root, err)
			}
			env.P = p
			// Registered after the opener's own cleanups, so it runs first:
			// the instance is closed before its process or server goes.
			t.Cleanup(func() {
				if err := env.Close(); err != nil {
					t.Errorf("close plugin: %v", err)
				}
			})
			for _, c := range tc.Needs {
				if !env.Has(c) {
					t.Skipf("plugin lacks capability %q", c)
				}
			}
			tc.Body(ctx, t, env)
		})
	}
}

// caseRoot makes a fresh root for one case.
func caseRoot(t T, under string) string {
	t.Helper()
	if under == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp(under, "case-")
	if err != nil {
		t.Fatalf("make case root: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
