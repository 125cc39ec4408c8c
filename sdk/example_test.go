package sdk_test

import (
	"context"
	"fmt"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/snapshot"
)

// A snapshotter plugin's main: Serve runs the process keeld starts, and
// the kind's Plugin builds its Definition from a name, a version and the
// Factory that makes the snapshotter at Configure. A whole plugin is
// docs/example/snapshotter; sdk/snapshot/backend's example is a Backend to
// build the snapshotter from.
func Example() {
	sdk.Serve(snapshot.Plugin("copy", "0.1.0", New))
}

// A content plugin's main is the same with content.Plugin (and so for
// resolver.Plugin and runtime.Plugin).
func ExampleServe_content() {
	sdk.Serve(content.Plugin("local", "0.1.0", NewStore))
}

// New is the snapshotter plugin's Factory: it decodes the plugin's config
// block and builds the snapshotter on env.Root.
func New(ctx context.Context, env sdk.Env) (snapshot.Snapshotter, error) {
	var cfg struct {
		Sync bool `json:"sync"`
	}
	if err := env.DecodeConfig(&cfg); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("a snapshotter on %s: %w", env.Root, errdefs.ErrNotImplemented)
}

// NewStore is the content plugin's Factory.
func NewStore(ctx context.Context, env sdk.Env) (content.Store, error) {
	if err := env.DecodeConfig(&struct{}{}); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("a content store on %s: %w", env.Root, errdefs.ErrNotImplemented)
}

// DecodeConfig fills a struct from the plugin's config block (JSON, as
// keeld converts it from HCL). A key the struct lacks is refused as
// InvalidArgument, and the error names it so keeld points at its line.
func ExampleEnv_DecodeConfig() {
	type config struct {
		Size   int64  `json:"size"`
		Policy string `json:"policy"`
	}
	var cfg config
	env := sdk.Env{Config: []byte(`{"size": 1024, "policy": "lru"}`)}
	if err := env.DecodeConfig(&cfg); err != nil {
		fmt.Println(err)
	}
	fmt.Printf("%+v\n", cfg)

	env.Config = []byte(`{"size": 1024, "polcy": "lru"}`)
	err := env.DecodeConfig(&config{})
	key, _ := sdk.ConfigKeyOf(err)
	fmt.Println(err)
	fmt.Println(errdefs.IsInvalidArgument(err), key)
	// Output:
	// {Size:1024 Policy:lru}
	// config key "polcy": unknown key: invalid argument
	// true polcy
}
