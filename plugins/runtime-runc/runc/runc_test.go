package runc_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runtimetest"
	"github.com/keel-runtime/keel/sdk/fixture/load"
)

// TestMain lets the test binary be the shim too: the in-process plugin
// re-executes its own executable, this one, in shim mode.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
		os.Exit(shim.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == createArg {
		os.Exit(createAndWait(os.Args[2:]))
	}
	os.Exit(load.Main(m))
}

func TestConformance(t *testing.T) {
	runtimetest.Run(conformance.Go(t), runtimetest.InProcess(runc.New))
}

// pluginBinary returns $KEEL_BIN/keel-runtime-runc, or builds it, with
// its shim executable beside it.
func pluginBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		if p := filepath.Join(dir, "keel-runtime-runc"); fileExists(p) && fileExists(filepath.Join(dir, shim.Executable)) {
			return p
		}
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/",
		"github.com/keel-runtime/keel/plugins/runtime-runc", "github.com/keel-runtime/keel/cmd/keel-runtime-runc-shim").CombinedOutput()
	if err != nil {
		t.Fatalf("build keel-runtime-runc and its shim: %v\n%s", err, out)
	}
	// go build names each after its directory.
	bin := filepath.Join(dir, "keel-runtime-runc")
	if err := os.Rename(filepath.Join(dir, "runtime-runc"), bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestConformanceBinary(t *testing.T) {
	runtimetest.Run(conformance.Go(t), runtimetest.Binary(pluginBinary(t)))
}
