package e2e

import (
	"fmt"
	"net/netip"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/cri"
)

// TestCRIPodCIDR: the pod CIDR of UpdateRuntimeConfig is the range new
// pods get addresses from (keel-cri's pod network); pods made before keep
// keeld's default network; the CIDR holds across keel-cri's restart; it
// changes only while no pod uses the old one.
func TestCRIPodCIDR(t *testing.T) {
	t.Parallel()
	// Subnets of this test process's own, and their bridges gone at the
	// end (registered first, so they run after the pods' removal).
	first, second := testNetFor(t, t.Name()+"/1").subnet, testNetFor(t, t.Name()+"/2").subnet
	for _, s := range []string{first, second} {
		t.Cleanup(func() { deleteLink(cri.PodNetworkBridge(s)) })
	}
	k := startCRIPodKeeld(t)
	rs, _ := k.criClients(t)
	ctx := t.Context()
	setCIDR := func(cidr string) error {
		_, err := rs.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{
			NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: cidr}}})
		return err
	}
	runPod := func(name string) string {
		t.Helper()
		resp, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(name)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.PodSandboxId
	}
	wantIn := func(pod, subnet string) {
		t.Helper()
		st, _ := podStatus(t, rs, pod)
		ip, err := netip.ParseAddr(st.GetNetwork().GetIp())
		if err != nil || !netip.MustParsePrefix(subnet).Contains(ip) {
			t.Errorf("pod %s has IP %q, want one in %s", st.Metadata.Name, st.GetNetwork().GetIp(), subnet)
		}
	}
	removePod := func(id string) {
		t.Helper()
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatal(err)
		}
	}

	old := runPod("old")
	wantIn(old, testNetFor(t, k.env.root).subnet)

	if err := setCIDR(first); err != nil {
		t.Fatal(err)
	}
	n, err := k.client(t, "default").Networks().Get(ctx, cri.PodNetworkName)
	if err != nil || n.Subnet != first || n.Bridge != cri.PodNetworkBridge(first) {
		t.Fatalf("pod network %+v, %v: want subnet %s on bridge %s", n, err, first, cri.PodNetworkBridge(first))
	}
	a := runPod("a")
	wantIn(a, first)
	wantIn(old, testNetFor(t, k.env.root).subnet)
	// The same CIDR again (a kubelet's restart) changes nothing; another
	// while a pod uses the network is refused.
	if err := setCIDR(first); err != nil {
		t.Errorf("the same pod CIDR again: %v", err)
	}
	if err := setCIDR(second); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a new pod CIDR while a pod uses the old: %v, want FailedPrecondition", err)
	}

	// A restarted keel-cri finds the CIDR and the pods' addresses in keeld.
	if err := syscall.Kill(k.waitCRI(0), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	k.waitCRI(1)
	wantIn(a, first)
	b := runPod("b")
	wantIn(b, first)

	// Once no pod uses it, a new CIDR replaces the network.
	removePod(a)
	removePod(b)
	if err := setCIDR(second); err != nil {
		t.Fatal(err)
	}
	c := runPod("c")
	wantIn(c, second)
	removePod(c)
	removePod(old)

	// The network removed behind keel-cri's back is made again by the
	// next pods, however many come at once.
	if err := k.client(t, "default").Networks().Delete(ctx, cri.PodNetworkName); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	pods := make([]string, 3)
	errs := make([]error, len(pods))
	for i := range pods {
		wg.Go(func() {
			resp, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(fmt.Sprintf("p%d", i))})
			if err == nil {
				pods[i] = resp.PodSandboxId
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, p := range pods {
		if errs[i] != nil {
			t.Errorf("pod p%d after the network's removal: %v", i, errs[i])
			continue
		}
		wantIn(p, second)
		removePod(p)
	}
	if left := (&runKeeld{keeld: k.keeld}).netLeftovers(t); len(left) > 0 {
		t.Errorf("network leftovers: %v", left)
	}
	for _, s := range []string{first, second} {
		if out, err := exec.Command("ip", "-o", "link", "show", "master", cri.PodNetworkBridge(s)).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("ports left on the pod bridge of %s: %s, %v", s, out, err)
		}
	}
}
