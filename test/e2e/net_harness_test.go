package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
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

// sweepStaleBridges removes the test bridges (kt<pid>-<n>) of e2e runs
// whose process is gone: a run killed before its cleanup leaves them. A
// bridge names its pid modulo 100000, so one stays while any live process
// has that number.
func sweepStaleBridges() {
	ifaces, err := net.Interfaces()
	if err != nil {
		return
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	live := map[int]bool{}
	for _, p := range procs {
		if pid, err := strconv.Atoi(p.Name()); err == nil {
			live[pid%100000] = true
		}
	}
	for _, i := range ifaces {
		var pid, n int
		if _, err := fmt.Sscanf(i.Name, "kt%d-%d", &pid, &n); err != nil || i.Name != fmt.Sprintf("kt%d-%d", pid, n) {
			continue
		}
		if !live[pid] {
			deleteLink(i.Name)
		}
	}
}
