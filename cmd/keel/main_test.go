package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestConnectError: a command that cannot reach keeld fails with the
// client's error, naming the socket and the cause, once; check, which can
// run while keeld is stopped, adds how and exits 2. Arguments that can
// never work are refused before keel connects.
func TestConnectError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	const hint = "; to check while keeld is stopped, run keeld check --config FILE [--repair]"
	tests := []struct {
		args  []string
		code  int // the exit code the error carries, 0 for the usual 1
		class func(error) bool
		want  []string
		not   string
	}{
		{[]string{"image", "ls"}, 0, errdefs.IsUnavailable, []string{sock, "no such file"}, hint},
		{[]string{"task", "kill", "c1"}, 0, errdefs.IsUnavailable, []string{sock, "no such file"}, hint},
		{[]string{"snapshot", "--snapshotter", "native", "ls"}, 0, errdefs.IsUnavailable, []string{sock}, hint},
		{[]string{"check"}, client.CheckError, errdefs.IsUnavailable, []string{sock, "no such file", hint}, ""},
		{[]string{"run", "--rm", "-d", "busybox", "c1"}, 0, errdefs.IsInvalidArgument, []string{"--rm and --detach"}, sock},
		{[]string{"content", "get", "sha256:nope"}, 0, errdefs.IsInvalidArgument, []string{`digest "sha256:nope"`}, sock},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(append([]string{"--address", sock}, tt.args...))
			err := root.ExecuteContext(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			var ee exitCodeError
			code := 0
			if errors.As(err, &ee) {
				code = ee.code
			}
			if code != tt.code || !tt.class(err) {
				t.Errorf("%v: exit code %d, want %d, or the wrong class", err, code, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if tt.not != "" && strings.Contains(err.Error(), tt.not) {
				t.Errorf("%q says %q", err, tt.not)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q: main prints the error, once", out.String())
			}
		})
	}
}
