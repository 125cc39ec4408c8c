package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Each keeld root gets a default network of its own, safe on a shared
// host: a bridge named after this process and a counter, a 10.X.N.0/24
// subnet (X picked at random once per process, N the counter), no
// default route and no masquerade, so no container traffic leaves the
// machine. The bridge goes with the test.
var (
	netMu     sync.Mutex
	netByRoot = map[string]testNet{}
	netOctet  = 100 + rand.IntN(100)
)

type testNet struct {
	bridge, subnet string
}

// testNetwork is root's network block.
func testNetwork(t testing.TB, root string) string {
	n := testNetFor(t, root)
	return fmt.Sprintf(`
network {
  bridge        = %q
  subnet        = %q
  masquerade    = false
  default_route = false
}
`, n.bridge, n.subnet)
}

func testNetFor(t testing.TB, root string) testNet {
	netMu.Lock()
	defer netMu.Unlock()
	if n, ok := netByRoot[root]; ok {
		return n
	}
	i := len(netByRoot) + 1
	n := testNet{bridge: fmt.Sprintf("kt%d-%d", os.Getpid()%100000, i), subnet: fmt.Sprintf("10.%d.%d.0/24", netOctet, i%256)}
	netByRoot[root] = n
	t.Cleanup(func() { deleteLink(n.bridge) })
	return n
}

// deleteLink removes a network interface, if it is there.
func deleteLink(name string) {
	if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
		fmt.Fprintf(os.Stderr, "e2e: ip link del %s: %v: %s\n", name, err, out)
	}
}
