package runtimetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/fixture"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// recursiveReadOnlyCase: a bind mount with the option "rro" is read-only
// in the container down to its submounts (a tmpfs mounted below it on the
// host), where a plain "ro" bind leaves the submount writable.
var recursiveReadOnlyCase = taskCase{
	Name:  "RecursiveReadOnlyMount",
	Needs: []string{keelruntime.CapabilityRecursiveReadOnly},
	Body: func(ctx context.Context, t conformance.T, env *conformance.Env[keelruntime.Runtime]) {
		e := newTaskEnv(t, env)
		host := e.path("volume")
		sub := filepath.Join(host, "tmpfs")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
		if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount a tmpfs below the volume: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })

		for _, tc := range []struct {
			id, option string
			want       string // what touching a file in the submount says
		}{
			{"ro", "ro", "writable"},
			{"rro", "rro", "Read-only file system"},
		} {
			spec := fixture.RuntimeSpec("sh", "-c", "touch /mnt/tmpfs/"+tc.id+" 2>&1 && echo writable")
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: host, Options: []string{"rbind", "rprivate", tc.option}})
			e.create(ctx, tc.id, spec)
			if _, err := e.rt().Start(ctx, tc.id, ""); err != nil {
				t.Fatalf("start %s: %v", tc.id, err)
			}
			e.wait(ctx, tc.id, "")
			if out := e.output(tc.id + ".out"); !strings.Contains(out, tc.want) {
				t.Errorf("touch in the submount of an %q bind: %q, want %q", tc.option, out, tc.want)
			}
		}
	},
}
