package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// settingErr is what pluginhost.StartError is to PluginError.
type settingErr struct {
	setting, key string
}

func (e settingErr) Error() string {
	return fmt.Sprintf("resolver.docker: refused: %v", errdefs.ErrInvalidArgument)
}
func (e settingErr) Unwrap() error                        { return errdefs.ErrInvalidArgument }
func (e settingErr) PluginSetting() (setting, key string) { return e.setting, e.key }

// TestPluginErrorPoints: a plugin's start refusal points at the setting it
// is about, and a refused key of the config block at that key's line.
func TestPluginErrorPoints(t *testing.T) {
	src := `root = "/r"
plugin "content" "local" { path = "/bin/c" }
plugin "resolver" "docker" {
  path   = "/bin/r"
  sha256 = "` + strings.Repeat("a", 64) + `"
  config {
    timeout = "1s"
    tls {
      verify = true
    }
    host "docker.io" {
      plain_http = true
    }
    host "example.com" {
      mirror "m.example.com" {
        plain_http = true
      }
    }
    rule { x = 1 }
    rule { x = 2 }
  }
}
plugin "snapshotter" "native" { path = "/bin/n" }
`
	c, err := Parse([]byte(src), "k.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		setting, key string
		want         string
	}{
		{"path", "", "k.hcl:4:12"},
		{"sha256", "", "k.hcl:5:12"},
		{"kind", "", "k.hcl:3:8"},
		{"config", "", "k.hcl:6:3"},
		{"config", "timeout", "k.hcl:7:5"},
		{"config", "tls", "k.hcl:8:5"},
		{"config", "tls.verify", "k.hcl:9:7"},
		{"config", "verify", "k.hcl:9:7"},           // an unknown key: its name only
		{"config", "host.docker.io", "k.hcl:11:10"}, // a label
		{"config", "rule.x", "k.hcl:19:12"},         // the first of an array
		{"config", "mirror.plain_http", "k.hcl:16:9"},
		{"config", "tls.Embedded.verify", "k.hcl:9:7"},      // a Go type name in the path
		{"config", "host.Endpoint.plain_http", "k.hcl:6:3"}, // twice under host: the block
		{"config", "plain_http", "k.hcl:6:3"},               // twice in the block: the block
		{"config", "nosuch", "k.hcl:6:3"},
		{"other", "", "k.hcl:6:3"},
	} {
		err := c.PluginError("resolver", "docker", settingErr{tt.setting, tt.key})
		want := tt.want + ": resolver.docker: refused"
		if !strings.HasPrefix(err.Error(), want) || !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s %q: %v, want %q…", tt.setting, tt.key, err, want)
		}
	}
	// The sha256 left out: the plugin block.
	if err := c.PluginError("snapshotter", "native", settingErr{"sha256", ""}); !strings.HasPrefix(err.Error(), "k.hcl:23:1: snapshotter.native: resolver.docker") {
		t.Errorf("sha256 not set: %v", err)
	}
	// A plain error points at the config block (here the plugin block).
	if err := c.PluginError("snapshotter", "native", errors.New("boom")); err.Error() != "k.hcl:23:1: snapshotter.native: boom" {
		t.Errorf("plain error: %v", err)
	}
}
