package cri

import (
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Which of an image's volumes get a directory of the container's: those
// no CRI mount is at, cleaned, once each, parents first.
func TestImageVolumes(t *testing.T) {
	vols := func(paths ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, p := range paths {
			m[p] = struct{}{}
		}
		return m
	}
	mount := func(dst string) *runtimeapi.Mount { return &runtimeapi.Mount{ContainerPath: dst, HostPath: "/host"} }
	for _, tc := range []struct {
		name    string
		volumes map[string]struct{}
		mounts  []*runtimeapi.Mount
		want    []string
	}{
		{"none", nil, nil, nil},
		{"sorted", vols("/var/lib/db", "/data", "/data/sub"), nil, []string{"/data", "/data/sub", "/var/lib/db"}},
		{"a mount replaces one", vols("/data", "/logs/"), []*runtimeapi.Mount{mount("/logs")}, []string{"/data"}},
		{"cleaned once", vols("/data/", "/data", "/x/../data"), nil, []string{"/data"}},
		{"relative ignored", vols("data", "/ok"), nil, []string{"/ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := imageVolumes(tc.volumes, tc.mounts); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
