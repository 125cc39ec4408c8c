package conformance

import (
	"os"
	"testing"

	"github.com/keel-runtime/keel/test/load"
)

// TestMain runs the suites under load when KEEL_TEST_LOAD=1.
func TestMain(m *testing.M) { os.Exit(load.Main(m)) }
