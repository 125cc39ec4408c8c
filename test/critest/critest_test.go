// Package critest runs critest (sigs.k8s.io/cri-tools' CRI validation
// suite) offline against a CRI endpoint and reports each spec's outcome.
//
// KEEL_CRITEST_TARGET picks the runtime: "containerd" (the default;
// Debian's containerd 1.6 with its CRI plugin, the reference) or "keel"
// (keeld with keel-cri, from KEEL_BIN). Both pull stand-ins of critest's
// images, built here and served from a loopback docker-registry
// (images_test.go). KEEL_CRITEST_FOCUS and KEEL_CRITEST_SKIP pass ginkgo
// focus and skip regexps through; KEEL_CRITEST_OUT names a file the
// summary is also written to, with critest's output and the runtime's log
// beside it. make test runs it against containerd (about 2 minutes
// here); make critest picks the target and keeps the output.
package critest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	target := os.Getenv("KEEL_CRITEST_TARGET")
	if target == "" {
		target = "containerd"
	}
	if target != "containerd" && target != "keel" {
		t.Fatalf("KEEL_CRITEST_TARGET=%q: want containerd or keel", target)
	}
	if target == "keel" {
		requireKeelCRI(t)
	}
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

	var endpoint string
	switch target {
	case "containerd":
		endpoint = startContainerd(t, reg.Host)
	case "keel":
		endpoint = startKeel(t, reg)
	}
	res := runCritest(t, critest, endpoint)
	sum := res.summary(target)
	t.Log("\n" + sum)
	if out := os.Getenv("KEEL_CRITEST_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(sum), 0o644); err != nil {
			t.Error(err)
		}
	}
	for _, s := range res.Setup {
		t.Errorf("critest's %s did not pass (%s): %s", s.Name, s.State, s.Reason)
	}
	// containerd is the reference: its outcome is reported, not judged.
	// keel must pass every spec but the digest-pinned image's.
	if target == "keel" {
		for _, s := range res.Specs {
			if s.State != "passed" && s.State != "skipped" && !allowedFailure(s) {
				t.Errorf("%s: %s: %s", s.State, s.Name, s.Reason)
			}
		}
	}
}

// runCritest runs critest against endpoint (runtime and image service
// alike) and returns its outcome, read from ginkgo's JSON report. critest
// exits non-zero when a spec fails: that is an outcome, not an error; a
// run with no report is.
func runCritest(t *testing.T, critest, endpoint string) result {
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
		keepBesideOut("-critest.log", b)
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
