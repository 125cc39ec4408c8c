package conformance_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runner"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// nativeBinary returns $KEEL_BIN/keel-snapshotter-native, or builds it.
func nativeBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		if p := filepath.Join(dir, "keel-snapshotter-native"); fileExists(p) {
			return p
		}
	}
	bin := filepath.Join(t.TempDir(), "keel-snapshotter-native")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keel-runtime/keel/plugins/snapshotter-native").CombinedOutput()
	if err != nil {
		t.Fatalf("build keel-snapshotter-native: %v\n%s", err, out)
	}
	return bin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestSnapshotterNativeBinary(t *testing.T) {
	snapshottest.Run(conformance.Go(t), snapshottest.Binary(nativeBinary(t)))
}

func TestRunCLISnapshotter(t *testing.T) {
	var out bytes.Buffer
	failed, err := runner.RunCLI("snapshotter", nativeBinary(t), &out, "table",
		conformance.WithRun(regexp.MustCompile(`^(Lifecycle|NotFound|Restart|Cleanup)$`)))
	if err != nil || failed {
		t.Fatalf("RunCLI = %v, %v\n%s", failed, err, out.String())
	}
	for _, c := range []string{"Lifecycle", "NotFound", "Restart", "Cleanup", "4 passed, 0 failed, 0 skipped"} {
		if !strings.Contains(out.String(), c) {
			t.Errorf("output lacks %q:\n%s", c, out.String())
		}
	}
}

// overlayBinary returns $KEEL_BIN/keel-snapshotter-overlay, or builds it.
func overlayBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		if p := filepath.Join(dir, "keel-snapshotter-overlay"); fileExists(p) {
			return p
		}
	}
	bin := filepath.Join(t.TempDir(), "keel-snapshotter-overlay")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keel-runtime/keel/plugins/snapshotter-overlay").CombinedOutput()
	if err != nil {
		t.Fatalf("build keel-snapshotter-overlay: %v\n%s", err, out)
	}
	return bin
}

func TestSnapshotterOverlayBinary(t *testing.T) {
	testkit.RequireRoot(t, "mount overlays")
	snapshottest.Run(conformance.Go(t), snapshottest.Binary(overlayBinary(t)))
}
