package network

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/testkit"
)

var bridgeN atomic.Int32

// newTestManager is a manager over the real plugins with a default network
// of its own (a bridge and a random 10.x.y.0/24 no interface of the host
// has), with no default route and no masquerade. Its bridge goes at
// cleanup.
func newTestManager(t *testing.T) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root (network namespaces, bridges)")
	}
	dir := t.TempDir()
	bridge := fmt.Sprintf("kn%d-%d", os.Getpid()%100000, bridgeN.Add(1))
	cfg := config.Network{
		CNIBinDirs: config.DefaultCNIBinDirs, CNIConfDir: filepath.Join(dir, "net.d"),
		DefaultName: "bridge", DefaultBridge: bridge, Subnet: freeSubnet(t),
	}
	m := New(cfg, filepath.Join(dir, "state"), hclog.NewNullLogger())
	if err := m.CheckPlugins(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		recs, _ := m.Attachments()
		for _, a := range recs {
			if err := m.teardown(context.Background(), a); err != nil {
				t.Errorf("cleanup %s: %v", a.ID, err)
			}
		}
		exec.Command("ip", "link", "del", bridge).Run()
	})
	return m
}

// freeSubnet picks a 10.x.y.0/24 that no address of the host is in.
func freeSubnet(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for {
		s := fmt.Sprintf("10.%d.%d.0/24", 100+rand.IntN(100), rand.IntN(256))
		_, n, _ := net.ParseCIDR(s)
		used := false
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && (n.Contains(ip.IP) || ip.Contains(n.IP)) {
				used = true
			}
		}
		if !used {
			return s
		}
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "last_reserved_ip") && d.Name() != "lock" {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return out
}

// inNS runs a command in a pinned namespace.
func inNS(t *testing.T, pin string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + pin}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", args, pin, err, out)
	}
	return string(out)
}

func TestAttachDetach(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	a, err := m.Attach(ctx, "t--one", []string{"bridge"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Settled("t--one")
	b, err := m.Attach(ctx, "t--two", []string{"bridge"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Settled("t--two")
	if len(a.IPs()) != 1 || len(b.IPs()) != 1 || a.IPs()[0] == b.IPs()[0] {
		t.Fatalf("ips %v %v", a.IPs(), b.IPs())
	}
	// One reaches the other, lo is up, and there is no default route.
	inNS(t, a.NetNS, "busybox", "ping", "-c1", "-W5", b.IPs()[0])
	inNS(t, a.NetNS, "busybox", "ping", "-c1", "-W5", "127.0.0.1")
	if r := inNS(t, a.NetNS, "ip", "route"); strings.Contains(r, "default") {
		t.Errorf("a default route: %s", r)
	}
	for _, tid := range []string{"t--one", "t--two"} {
		if err := m.Detach(ctx, tid); err != nil {
			t.Fatal(err)
		}
	}
	if left := entries(t, m.state); len(left) > 0 {
		t.Errorf("left under state: %v", left)
	}
}

func TestReconcile(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	for _, tid := range []string{"t--live", "t--gone", "t--pingone"} {
		if _, err := m.Attach(ctx, tid, []string{"bridge"}, nil); err != nil {
			t.Fatal(err)
		}
		m.Settled(tid)
	}
	// t--pingone's namespace vanished behind keeld's back; a record
	// written before a crash, never added, stands beside them.
	if err := removeNetNS(m.PinPath("t--pingone")); err != nil {
		t.Fatal(err)
	}
	if err := m.writeRecord(Attachment{ID: "t--crashed", NetNS: m.PinPath("t--crashed"), Links: []Link{{Network: "bridge", IfName: "eth0"}}}); err != nil {
		t.Fatal(err)
	}
	// An attach in flight is spared even though its task is not live.
	m.begin("t--inflight")
	m.writeRecord(Attachment{ID: "t--inflight", Links: []Link{{Network: "bridge", IfName: "eth0"}}})
	torn, err := m.Reconcile(ctx, func(context.Context) (map[string]bool, error) { return map[string]bool{"t--live": true}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(torn, ",") != "t--crashed,t--gone,t--pingone" {
		t.Errorf("torn down %v", torn)
	}
	if _, err := m.Attachment("t--inflight"); err != nil {
		t.Errorf("in-flight record: %v", err)
	}
	m.end("t--inflight")
	if _, err := m.Reconcile(ctx, func(context.Context) (map[string]bool, error) { return nil, errors.New("runtime down") }); err == nil {
		t.Error("reconcile without the task list went on")
	}
	if _, err := m.Attachment("t--live"); err != nil {
		t.Errorf("live attachment: %v", err)
	}
	if err := m.Detach(ctx, "t--live"); err != nil {
		t.Fatal(err)
	}
	os.Remove(m.recordPath("t--inflight"))
	if left := entries(t, m.state); len(left) > 0 {
		t.Errorf("left under state: %v", left)
	}
	// With nothing attached the runtimes are not asked (an idle one
	// would be started for it).
	if _, err := m.Reconcile(ctx, func(context.Context) (map[string]bool, error) {
		t.Error("reconcile with no attachment listed the tasks")
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNetworksCRUD(t *testing.T) {
	m := newTestManager(t)
	if _, err := m.Create(CreateOpts{Name: "x", Subnet: "10.1.2.3/24"}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "host bits") {
		t.Errorf("bad subnet: %v", err)
	}
	sub := freeSubnet(t)
	n, err := m.Create(CreateOpts{Name: "front", Bridge: fmt.Sprintf("kf%d", os.Getpid()%100000), Subnet: sub, Labels: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", n.Bridge).Run() })
	if n.Subnet != sub || n.Labels["a"] != "b" {
		t.Errorf("created %+v", n)
	}
	if _, err := m.Create(CreateOpts{Name: "front2", Subnet: sub}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("overlapping subnet: %v", err)
	}
	list, err := m.List()
	if err != nil || len(list) != 2 || list[0].Name != "bridge" || !list[0].Default || list[1].Name != "front" {
		t.Fatalf("list %+v %v", list, err)
	}
	ctx := context.Background()
	if _, err := m.Attach(ctx, "t--a", []string{"bridge", "front"}, nil); err != nil {
		t.Fatal(err)
	}
	m.Settled("t--a")
	if err := m.Delete("front"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("delete while attached: %v", err)
	}
	if err := m.Detach(ctx, "t--a"); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete("front"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("front"); !errdefs.IsNotFound(err) {
		t.Errorf("get deleted: %v", err)
	}
}

// TestDetachEarlierLoopback: an attachment an earlier keeld made ran CNI's
// loopback plugin under loopbackNetwork; its detach runs that DEL from
// libcni's cache, which leaves nothing under the state dir. A new attach
// runs no loopback plugin and still has lo up.
func TestDetachEarlierLoopback(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	a, err := m.Attach(ctx, "t--old", []string{"bridge"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Settled("t--old")
	if out := inNS(t, a.NetNS, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Errorf("lo of a new attach: %s", out)
	}
	for _, e := range entries(t, m.state) {
		if strings.Contains(e, loopbackNetwork) {
			t.Errorf("a new attach cached a loopback ADD: %s", e)
		}
	}
	old, err := libcni.ConfListFromBytes([]byte(`{"cniVersion": "1.0.0", "name": "` + loopbackNetwork + `", "plugins": [{"type": "loopback"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.cni.AddNetworkList(ctx, old, &libcni.RuntimeConf{ContainerID: "t--old", NetNS: a.NetNS, IfName: "lo"}); err != nil {
		t.Fatal(err)
	}
	cached := false
	for _, e := range entries(t, m.state) {
		cached = cached || strings.Contains(e, loopbackNetwork)
	}
	if !cached {
		t.Fatalf("no cached loopback ADD under the state dir: %v", entries(t, m.state))
	}
	if err := m.Detach(ctx, "t--old"); err != nil {
		t.Fatal(err)
	}
	if left := entries(t, m.state); len(left) > 0 {
		t.Errorf("left under state: %v", left)
	}
}
