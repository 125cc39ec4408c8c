package critest

import (
	"testing"

	"github.com/keel-runtime/keel/test/critools"
)

// criToolsVersion is the cri-tools version critest and crictl are built
// at (package critools, which the benchmarks share).
const criToolsVersion = critools.Version

// cacheDir holds the built binaries (critools.CacheDir).
func cacheDir() string { return critools.CacheDir() }

// criTool returns the path of critest or crictl at criToolsVersion
// (critools.Tool).
func criTool(t testing.TB, name string) string { return critools.Tool(t, name) }
