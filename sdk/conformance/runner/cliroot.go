package runner

import (
	"context"
	"encoding/json"
	"os"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/fixture"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/host"
)

// cliRoot returns opts with where a CLI run makes the cases' roots. With
// none given, the plugin is first configured on an ordinary temp dir: if
// it refuses with FailedPrecondition, as the btrfs snapshotter does for a
// root not on btrfs, the run gets a loopback btrfs, torn down when the run
// ends (RunCLIContext runs every cleanup, also when interrupted). The
// plugin's own refusal decides, not its name, so a renamed or third-party
// plugin needing btrfs is served alike, and others pay one launch.
func cliRoot(t conformance.T, path, kind string, opts []conformance.Option) []conformance.Option {
	t.Helper()
	o := conformance.NewOptions(opts)
	if o.RootDir != "" {
		return opts
	}
	refusal := probeConfigure(t.Context(), path, kind, o.Config)
	if !errdefs.IsFailedPrecondition(refusal) {
		return opts // it takes a temp dir, or fails in a way the cases will show
	}
	dir, err := os.MkdirTemp("", "keel-conformance-btrfs-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := fixture.NewLoopbackBtrfs(dir, fixture.DefaultLoopbackSize, fixture.ScratchMountOptions)
	if err != nil {
		t.Fatalf("plugin refused a root in a temp dir (%v); making a loopback btrfs for it failed: %v", refusal, err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("tear down loopback btrfs: %v", err)
		}
	})
	return append(opts, conformance.WithRootDir(l.Dir))
}

// probeConfigure launches the plugin at path and configures it on a
// throwaway root, returning Configure's error.
func probeConfigure(ctx context.Context, path, kind string, config json.RawMessage) error {
	root, err := os.MkdirTemp("", "keel-conformance-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	proc, err := host.Launch(ctx, host.LaunchConfig{
		Path:      path,
		Kind:      kind,
		Instance:  kind + ".probe",
		Logger:    hclog.NewNullLogger(),
		SocketDir: root,
	})
	if err != nil {
		return err
	}
	defer proc.Kill()
	_, err = proc.Configure(ctx, root, root+"/state", config)
	return err
}
