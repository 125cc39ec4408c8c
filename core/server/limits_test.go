package server

import (
	"os"
	"testing"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/core/images"
)

// TestExampleLimitsAreDefaults: the limits block of config.hcl.example
// writes keel's defaults, as its comments say.
func TestExampleLimitsAreDefaults(t *testing.T) {
	src, err := os.ReadFile("../../config.hcl.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(src, "config.hcl.example")
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits == nil {
		t.Fatal("the example has no limits block")
	}
	if got, want := imageLimits(c), images.DefaultLimits(); got != want {
		t.Errorf("example limits %+v, defaults %+v", got, want)
	}
	if got := imageLimits(&config.Config{}); got != images.DefaultLimits() {
		t.Errorf("no limits block: %+v", got)
	}
}
