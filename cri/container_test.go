package cri

import (
	"slices"
	"testing"
)

// The kubelet's merge of a container's command and args with its image's
// entrypoint and cmd (as containerd does it).
func TestProcessArgs(t *testing.T) {
	entry, cmd := []string{"/entry"}, []string{"--cmd"}
	for _, tc := range []struct {
		name                        string
		command, args, entry, image []string
		want                        []string
	}{
		{"image's alone", nil, nil, entry, cmd, []string{"/entry", "--cmd"}},
		{"args replace cmd", nil, []string{"--arg"}, entry, cmd, []string{"/entry", "--arg"}},
		{"command replaces both", []string{"/bin/sh"}, nil, entry, cmd, []string{"/bin/sh"}},
		{"command and args", []string{"/bin/sh"}, []string{"-c", "true"}, entry, cmd, []string{"/bin/sh", "-c", "true"}},
		{"cmd alone", nil, nil, nil, []string{"/bin/sh"}, []string{"/bin/sh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := processArgs(tc.command, tc.args, tc.entry, tc.image)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := processArgs(nil, nil, nil, nil); err == nil {
		t.Error("no command anywhere: no error")
	}
}
