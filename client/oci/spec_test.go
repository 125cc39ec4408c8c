package oci

import (
	"context"
	"slices"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

type fakeImage struct{ img ocispec.Image }

func (f fakeImage) Config(context.Context) (ocispec.Image, error) { return f.img, nil }

func TestGenerateSpec(t *testing.T) {
	img := fakeImage{ocispec.Image{Config: ocispec.ImageConfig{
		Env: []string{"PATH=/img/bin", "A=1"}, Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"},
		WorkingDir: "/srv", User: "1000:1001",
	}}}
	for _, tc := range []struct {
		name  string
		opts  []SpecOpt
		check func(*testing.T, *Spec)
	}{
		{"defaults", nil, func(t *testing.T, s *Spec) {
			if !s.Process.NoNewPrivileges || len(s.Linux.MaskedPaths) == 0 || s.Linux.Resources.Devices[0].Allow {
				t.Errorf("unsafe default: %+v", s.Process)
			}
			if s.Process.OOMScoreAdj != nil {
				t.Error("default sets oom_score_adj")
			}
		}},
		{"image config", []SpecOpt{WithImageConfig(img), WithEnv("A=2", "B=3")}, func(t *testing.T, s *Spec) {
			if !slices.Equal(s.Process.Args, []string{"/bin/sh", "-c", "echo hi"}) || s.Process.Cwd != "/srv" || s.Process.User.UID != 1000 || s.Process.User.GID != 1001 {
				t.Errorf("process %+v", s.Process)
			}
			if !slices.Equal(s.Process.Env, []string{"PATH=/img/bin", "A=2", "B=3"}) {
				t.Errorf("env %v", s.Process.Env)
			}
		}},
		{"args override image", []SpecOpt{WithImageConfig(img), WithProcessArgs("true"), WithCwd("/"), WithUser("root")}, func(t *testing.T, s *Spec) {
			if !slices.Equal(s.Process.Args, []string{"true"}) || s.Process.Cwd != "/" || s.Process.User.UID != 0 {
				t.Errorf("process %+v", s.Process)
			}
		}},
		{"resources", []SpecOpt{WithMemoryLimit(64 << 20), WithCPUs(0.5), WithPidsLimit(10)}, func(t *testing.T, s *Spec) {
			r := s.Linux.Resources
			if *r.Memory.Limit != 64<<20 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.Pids.Limit != 10 {
				t.Errorf("resources %+v", r)
			}
		}},
		{"host network", []SpecOpt{WithHostNamespace(specs.NetworkNamespace)}, func(t *testing.T, s *Spec) {
			for _, n := range s.Linux.Namespaces {
				if n.Type == specs.NetworkNamespace {
					t.Error("network namespace kept")
				}
			}
		}},
		{"tty readonly privileged", []SpecOpt{WithTTY, WithReadonlyRootfs, WithPrivileged}, func(t *testing.T, s *Spec) {
			if !s.Process.Terminal || !s.Root.Readonly || s.Process.NoNewPrivileges || len(s.Linux.MaskedPaths) != 0 || !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
				t.Errorf("spec %+v", s.Process)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := GenerateSpec(t.Context(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
	for _, bad := range []SpecOpt{WithUser("bob"), WithEnv("NOEQ"), WithCwd("rel"), WithMemoryLimit(0), WithCPUs(-1), WithPidsLimit(0), WithMounts(specs.Mount{Destination: "x"})} {
		if _, err := GenerateSpec(t.Context(), bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("bad option: %v, want InvalidArgument", err)
		}
	}
}
