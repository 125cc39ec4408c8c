package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/contenttest"
	"github.com/keel-runtime/keel/sdk/conformance/resolvertest"
	"github.com/keel-runtime/keel/sdk/conformance/runtimetest"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// cliSuite runs one kind's suite against the plugin binary at path.
type cliSuite func(t conformance.T, path string, opts ...conformance.Option)

// cliSuites holds the suites RunCLI dispatches to, by kind.
var cliSuites = map[string]cliSuite{
	sdk.KindSnapshotter: func(t conformance.T, path string, opts ...conformance.Option) {
		opts = cliRoot(t, path, sdk.KindSnapshotter, opts)
		snapshottest.Run(t, snapshottest.Binary(path, opts...), opts...)
	},
	sdk.KindContent: func(t conformance.T, path string, opts ...conformance.Option) {
		contenttest.Run(t, contenttest.Binary(path, opts...), opts...)
	},
	sdk.KindResolver: func(t conformance.T, path string, opts ...conformance.Option) {
		resolvertest.Run(t, resolvertest.Binary(path, opts...), opts...)
	},
	sdk.KindRuntime: func(t conformance.T, path string, opts ...conformance.Option) {
		runtimetest.Run(t, runtimetest.Binary(path, opts...), opts...)
	},
}

// RunSuite runs suite outside go test, with the T RunCLI uses, and returns
// each case's result; a failure outside any case is the result "(suite)".
// It is how a suite's own tests check that it fails a plugin that breaks
// its contract.
func RunSuite(ctx context.Context, suite func(conformance.T)) []Result {
	rec := &recorder{}
	root := newCLIT("", rec, ctx)
	runGuarded(root, func() { suite(root) })
	root.finish()
	results := rec.results
	caseFailed := slices.ContainsFunc(results, func(r Result) bool { return r.Status == "fail" })
	if root.Failed() && (len(root.msgs) > 0 || !caseFailed) {
		results = append(results, Result{Name: "(suite)", Status: "fail", Messages: root.msgs})
	}
	return results
}

// StatusByCase maps each case's name to its status ("pass", "fail", "skip").
func StatusByCase(results []Result) map[string]string {
	out := make(map[string]string, len(results))
	for _, r := range results {
		out[r.Name] = r.Status
	}
	return out
}

// Kinds lists the plugin kinds RunCLI can test.
func Kinds() []string {
	var out []string
	for k := range cliSuites {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Result is the outcome of one case.
type Result struct {
	Name     string        `json:"name"`
	Status   string        `json:"status"` // "pass", "fail" or "skip"
	Duration time.Duration `json:"duration_ns"`
	Messages []string      `json:"messages,omitempty"`
}

// Report is the outcome of a CLI run.
type Report struct {
	Kind    string   `json:"kind"`
	Plugin  string   `json:"plugin"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Skipped int      `json:"skipped"`
	Cases   []Result `json:"cases"`
}

// RunCLI runs the suite of kind against the plugin binary at pluginPath and
// writes the results to w as a table or as JSON (format "table" or "json").
// failed is true when any case failed; err is for a run that could not
// start (unknown kind or format, no such file). Cases run one at a time,
// each in its own goroutine, so a fatal check ends only its case.
func RunCLI(kind, pluginPath string, w io.Writer, format string, opts ...conformance.Option) (failed bool, err error) {
	return RunCLIContext(context.Background(), kind, pluginPath, w, format, opts...)
}

// RunCLIContext is RunCLI ended early by ctx (e.g. on Ctrl-C): the case
// running fails, the rest are skipped, and every cleanup still runs, so
// nothing the run mounted or started is left behind.
func RunCLIContext(ctx context.Context, kind, pluginPath string, w io.Writer, format string, opts ...conformance.Option) (failed bool, err error) {
	suite, ok := cliSuites[kind]
	if !ok {
		return false, fmt.Errorf("conformance: unknown plugin kind %q (known: %s): %w",
			kind, strings.Join(Kinds(), ", "), errdefs.ErrInvalidArgument)
	}
	if format == "" {
		format = "table"
	}
	if format != "table" && format != "json" {
		return false, fmt.Errorf("conformance: unknown format %q (table or json): %w", format, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(pluginPath); err != nil {
		if os.IsNotExist(err) {
			return false, fmt.Errorf("conformance: plugin %s: %w", pluginPath, errdefs.ErrNotFound)
		}
		return false, fmt.Errorf("conformance: plugin %s: %w", pluginPath, err)
	}

	rep := Report{Kind: kind, Plugin: pluginPath,
		Cases: RunSuite(ctx, func(t conformance.T) { suite(t, pluginPath, opts...) })}
	for _, r := range rep.Cases {
		switch r.Status {
		case "pass":
			rep.Passed++
		case "fail":
			rep.Failed++
		case "skip":
			rep.Skipped++
		}
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = writeTable(w, rep)
	}
	return rep.Failed > 0, err
}

// writeTable prints one aligned row per case, then, indented below a row
// that did not pass, its messages (a failed case's include the plugin's
// log). Messages stay out of the alignment, so one long line does not
// widen every row.
func writeTable(w io.Writer, rep Report) error {
	width := len("CASE")
	for _, r := range rep.Cases {
		width = max(width, len(r.Name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %-6s  %s\n", width, "CASE", "RESULT", "TIME")
	for _, r := range rep.Cases {
		fmt.Fprintf(&b, "%-*s  %-6s  %s\n", width, r.Name, strings.ToUpper(r.Status), r.Duration.Round(time.Millisecond))
		if r.Status == "pass" {
			continue
		}
		for _, m := range r.Messages {
			for _, line := range strings.Split(strings.TrimRight(m, "\n"), "\n") {
				fmt.Fprintf(&b, "    %s\n", strings.TrimRight(line, " \t"))
			}
		}
	}
	fmt.Fprintf(&b, "%s %s: %d passed, %d failed, %d skipped\n",
		rep.Kind, rep.Plugin, rep.Passed, rep.Failed, rep.Skipped)
	_, err := io.WriteString(w, b.String())
	return err
}

type recorder struct {
	mu      sync.Mutex
	results []Result
}

func (r *recorder) add(res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
}

// cliT is the CLI's T: a tiny testing shim. Fatalf and Skipf end the case's
// goroutine with runtime.Goexit, as the testing package does.
type cliT struct {
	name   string
	rec    *recorder
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	failed   bool
	skipped  bool
	msgs     []string
	cleanups []func()
}

var _ conformance.T = (*cliT)(nil)

func newCLIT(name string, rec *recorder, parent context.Context) *cliT {
	ctx, cancel := context.WithCancel(parent)
	return &cliT{name: name, rec: rec, ctx: ctx, cancel: cancel}
}

func (t *cliT) Helper() {}

func (t *cliT) log(msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.msgs = append(t.msgs, msg)
}

func (t *cliT) Logf(format string, args ...any) { t.log(fmt.Sprintf(format, args...)) }

func (t *cliT) Errorf(format string, args ...any) {
	t.log(fmt.Sprintf(format, args...))
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}

func (t *cliT) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}

func (t *cliT) Skipf(format string, args ...any) {
	t.log(fmt.Sprintf(format, args...))
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *cliT) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *cliT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *cliT) TempDir() string {
	dir, err := os.MkdirTemp("", "keel-conformance-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (t *cliT) Context() context.Context { return t.ctx }

func (t *cliT) Run(name string, f func(conformance.T)) bool {
	full := name
	if t.name != "" {
		full = t.name + "/" + name
	}
	child := newCLIT(full, t.rec, t.ctx)
	if err := t.ctx.Err(); err != nil {
		t.rec.add(Result{Name: full, Status: "skip", Messages: []string{"not run: " + err.Error()}})
		return true
	}
	start := time.Now()
	runGuarded(child, func() { f(child) })
	child.finish()

	res := Result{Name: full, Status: "pass", Duration: time.Since(start), Messages: child.msgs}
	switch {
	case child.failed:
		res.Status = "fail"
		t.mu.Lock()
		t.failed = true
		t.mu.Unlock()
	case child.skipped:
		res.Status = "skip"
	}
	t.rec.add(res)
	return !child.failed
}

// finish cancels the context and runs the cleanups, last registered first,
// each guarded so that a failing one does not stop the rest.
func (t *cliT) finish() {
	t.cancel()
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		runGuarded(t, f)
	}
}

// runGuarded runs f in its own goroutine and waits: Goexit (Fatalf, Skipf)
// ends only f, and a panic fails t instead of the process.
func runGuarded(t *cliT, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		f()
	}()
	<-done
}
