package runc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc/shim"
	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/host"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// TestShimExecutable: the plugin binary runs its tasks' shims from
// keel-runtime-runc-shim beside it, checked against shim_sha256 when that
// is set: a wrong digest fails the plugin's configuration.
func TestShimExecutable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containers")
	}
	bin := pluginBinary(t)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(bin), shim.Executable))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	for _, tc := range []struct {
		name, sha256 string
		ok           bool
	}{
		{"unchecked", "", true},
		{"checked", hex.EncodeToString(sum[:]), true},
		{"prefixed", "sha256:" + hex.EncodeToString(sum[:]), true},
		{"wrong", hex.EncodeToString(make([]byte, 32)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			state, err := os.MkdirTemp("", "keel-runc-exe-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(state) })
			proc, err := host.Launch(ctx, host.LaunchConfig{Path: bin, Kind: sdk.KindRuntime, Instance: "runtime.runc", SocketDir: state})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proc.Kill)
			_, err = proc.Configure(ctx, t.TempDir(), state, fmt.Appendf(nil, `{"shim_sha256":%q}`, tc.sha256))
			if !tc.ok {
				if !errdefs.IsFailedPrecondition(err) {
					t.Fatalf("configure with a wrong shim_sha256: %v, want FailedPrecondition", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rt := keelruntime.NewClient(proc.Conn())
			if err := createTask(t, rt, "exe", &keelruntime.CreateOpts{Spec: fixture.RuntimeSpec("sleep", "600")}); err != nil {
				t.Fatal(err)
			}
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", shimPid(t, state, "exe")))
			if err != nil || filepath.Base(exe) != shim.Executable {
				t.Errorf("the shim runs %q (%v), want %s", exe, err, shim.Executable)
			}
		})
	}
}
