package server

import (
	"slices"
	"testing"

	"github.com/keel-runtime/keel/core/config"
)

// TestChangedKeys: what Reload logs as needing a restart is every
// top-level key whose value changed, but those it applies itself.
func TestChangedKeys(t *testing.T) {
	parse := func(src string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(src+"\nplugin \"content\" \"local\" {\n  path = \"/bin/c\"\n}\n"), "t.hcl")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse(`root = "/r"`)
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{
		{"nothing", `root = "/r"`, nil},
		{"spacing and comments", "# a comment\nroot   =   \"/r\"", nil},
		{"applied live", "root = \"/r\"\nlog_level = \"debug\"", nil},
		{"root and state", "root = \"/r2\"\nstate = \"/s\"", []string{"grpc", "root", "state"}},
		{"log_format", "root = \"/r\"\nlog_format = \"json\"", []string{"log_format"}},
		{"a block", "root = \"/r\"\ngc { interval = \"1m\" }", []string{"gc"}},
		{"a block's default written out", "root = \"/r\"\ncontainer_logs { max_files = 3 }", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := changedKeys(base, parse(tc.src), "log_level", "plugins")
			if !slices.Equal(got, tc.want) {
				t.Errorf("changed %v, want %v", got, tc.want)
			}
		})
	}
}
