package docker

import (
	"os"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk"
)

// TestExampleConfig: the resolver block of config.hcl.example is a config
// this plugin accepts.
func TestExampleConfig(t *testing.T) {
	c, err := config.Load("../../../config.hcl.example")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Plugin(sdk.KindResolver, "docker")
	if p == nil {
		t.Fatal("config.hcl.example has no resolver.docker block")
	}
	if _, err := New(t.Context(), sdk.Env{Config: p.Config}); err != nil {
		t.Fatalf("example config refused: %v", err)
	}
}

// TestReadmeConfig: the README's hcl block is a config this plugin accepts.
func TestReadmeConfig(t *testing.T) {
	md, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(md), "```hcl\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no hcl block")
	}
	c, err := config.Parse([]byte(block+"\nplugin \"content\" \"local\" {\n  path = \"keel-content-local\"\n}\n"), "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(t.Context(), sdk.Env{Config: c.Plugin(sdk.KindResolver, "docker").Config}); err != nil {
		t.Fatalf("README config refused: %v", err)
	}
}
