// Package critest runs critest (sigs.k8s.io/cri-tools' CRI validation
// suite) offline against a CRI endpoint and reports each spec's outcome.
//
// It runs against Debian's containerd 1.6 with its CRI plugin (the
// reference, reported and not judged), then against keeld with keel-cri
// (from KEEL_BIN), which must pass every spec but the digest-pinned
// image's, and every spec containerd passes; KEEL_CRITEST_TARGET
// ("containerd" or "keel") runs one of them only. Under KEEL_TEST_LOAD
// both run while the machine is kept busy. Both pull stand-ins of critest's
// images, built here and served from a loopback docker-registry
// (images_test.go). KEEL_CRITEST_FOCUS and KEEL_CRITEST_SKIP pass ginkgo
// focus and skip regexps through; KEEL_CRITEST_OUT names a file the
// summary is also written to, with critest's output and the runtime's log
// beside it. make test runs both (about 2 minutes each here); make
// critest picks the target and keeps the output.
package critest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/fixture/load"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// allowedFailure tells the specs that may fail on any runtime: those that
// pull the digest-pinned image, which no stand-in can match.
func allowedFailure(s spec) bool {
	return strings.Contains(s.Message, digestPinned)
}

func TestCritest(t *testing.T) {
	testkit.RequireRoot(t, "run containers through the CRI")
	targets := []string{"containerd", "keel"}
	if target := os.Getenv("KEEL_CRITEST_TARGET"); target != "" {
		if target != "containerd" && target != "keel" {
			t.Fatalf("KEEL_CRITEST_TARGET=%q: want containerd or keel", target)
		}
		targets = []string{target}
	}
	load.During(t)
	critest := criTool(t, "critest")
	criTool(t, "crictl")
	reg, err := registry.Start(t, registry.Options{})
	if err != nil {
		testkit.SkipOrFail(t, "%v", err)
	}
	images := seedStandIns(t, reg)
	for _, s := range images {
		t.Logf("stand-in %s: %s", strings.Join(s.refs, ", "), s.why)
	}

	results := map[string]result{}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			var endpoint string
			switch target {
			case "containerd":
				endpoint = startContainerd(t, reg.Host)
			case "keel":
				requireKeelCRI(t)
				endpoint = startKeel(t, reg)
			}
			res := runCritest(t, critest, endpoint, target)
			results[target] = res
			sum := res.summary(target)
			t.Log("\n" + sum)
			if out := os.Getenv("KEEL_CRITEST_OUT"); out != "" {
				if len(targets) > 1 {
					out = strings.TrimSuffix(out, filepath.Ext(out)) + "-" + target + filepath.Ext(out)
				}
				if err := os.WriteFile(out, []byte(sum), 0o644); err != nil {
					t.Error(err)
				}
			}
			for _, s := range res.Setup {
				t.Errorf("critest's %s did not pass (%s): %s", s.Name, s.State, s.Reason)
			}
			// containerd is the reference: its outcome is reported, not
			// judged. keel must pass every spec but the digest-pinned
			// image's.
			if target == "keel" {
				for _, s := range res.Specs {
					if s.State != "passed" && s.State != "skipped" && !allowedFailure(s) {
						t.Errorf("%s: %s: %s", s.State, s.Name, s.Reason)
					}
				}
			}
		})
	}
	// Every spec the reference passes, keel passes: a skip of keel's
	// where containerd ran the spec is a feature missing.
	ref, okRef := results["containerd"]
	got, okKeel := results["keel"]
	if okRef && okKeel {
		for _, missing := range notPassedBy(got, passedBy(ref)) {
			t.Errorf("containerd passes %q, keel does not (%s: %s)", missing.Name, missing.State, missing.Reason)
		}
	}
}

// passedBy is the names of the specs r passed.
func passedBy(r result) map[string]bool {
	out := map[string]bool{}
	for _, s := range r.Specs {
		if s.State == "passed" {
			out[s.Name] = true
		}
	}
	return out
}

// notPassedBy is r's specs among names that r did not pass.
func notPassedBy(r result, names map[string]bool) []spec {
	var out []spec
	for _, s := range r.Specs {
		if names[s.Name] && s.State != "passed" {
			out = append(out, s)
		}
	}
	return out
}

// runCritest runs critest against target's endpoint (runtime and image service
// alike) and returns its outcome, read from ginkgo's JSON report. critest
// exits non-zero when a spec fails: that is an outcome, not an error; a
// run with no report is.
func runCritest(t *testing.T, critest, endpoint, target string) result {
	t.Helper()
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	args := []string{
		"--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
		"--ginkgo.json-report", report, "--ginkgo.v", "--ginkgo.no-color",
	}
	if f := os.Getenv("KEEL_CRITEST_FOCUS"); f != "" {
		args = append(args, "--ginkgo.focus", f)
	}
	if s := os.Getenv("KEEL_CRITEST_SKIP"); s != "" {
		args = append(args, "--ginkgo.skip", s)
	}
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-2*time.Minute))
		defer cancel()
	}
	logPath := filepath.Join(dir, "critest.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, critest, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// critest's pods write their logs under its working directory's temp
	// dirs; keep them in the test's.
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("critest ran %s (%v); its log: %s", time.Since(start).Round(time.Second), runErr, logPath)
	res, err := parseReport(report)
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("critest: %v (run: %v)\n%s", err, runErr, tail(b, 16<<10))
	}
	if b, err := os.ReadFile(logPath); err == nil {
		keepBesideOut("-"+target+"-critest.log", b)
	}
	return res
}

// keepBesideOut writes b beside KEEL_CRITEST_OUT (its name without the
// extension, then suffix), when set: the test's temp dirs go with it.
func keepBesideOut(suffix string, b []byte) {
	if out := os.Getenv("KEEL_CRITEST_OUT"); out != "" {
		os.WriteFile(strings.TrimSuffix(out, filepath.Ext(out))+suffix, b, 0o644)
	}
}
