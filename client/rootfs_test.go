package client

import (
	"slices"
	"testing"

	"github.com/keel-runtime/keel/sdk/mount"
)

// TestReadonlyMounts: a snapshot's mounts, made read-only for reading its
// files; an overlay's upper dir becomes its top lower dir.
func TestReadonlyMounts(t *testing.T) {
	tests := []struct {
		name string
		in   mount.Mount
		want []string
	}{
		{"Bind", mount.Mount{Type: "bind", Source: "/s", Options: []string{"rbind", "rw"}}, []string{"rbind", "ro"}},
		{"OverlayActive", mount.Overlay([]string{"/l2", "/l1"}, "/u", "/w", "index=off"),
			[]string{"lowerdir=/u:/l2:/l1", "index=off", "ro"}},
		{"OverlayView", mount.Overlay([]string{"/l2", "/l1"}, "", ""), []string{"lowerdir=/l2:/l1", "ro"}},
		{"OverlayLong", mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir+=/l2", "lowerdir+=/l1", "upperdir=/u", "workdir=/w"}},
			[]string{"lowerdir+=/u", "lowerdir+=/l2", "lowerdir+=/l1", "ro"}},
		{"Btrfs", mount.Mount{Type: "btrfs", Source: "/dev/loop0", Options: []string{"subvol=snapshots/3"}}, []string{"subvol=snapshots/3", "ro"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readonlyMounts([]mount.Mount{tt.in})
			if len(got) != 1 || got[0].Type != tt.in.Type || got[0].Source != tt.in.Source || !slices.Equal(got[0].Options, tt.want) {
				t.Fatalf("got %+v, want options %v", got, tt.want)
			}
		})
	}
}
