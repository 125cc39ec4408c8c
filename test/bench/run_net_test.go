package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// benchNetwork is keeld's network block in the bridge figure.
var benchNetwork = keelNetwork("keelbench0", "10.231.0.0/24")

// keelNetwork is a keeld network block: the default network on a bridge
// of its own, like containerd's bridgeConflist, with no route or
// masquerade out of the machine.
func keelNetwork(bridge, subnet string) string {
	return fmt.Sprintf(`network {
  bridge        = %q
  subnet        = %q
  masquerade    = false
  default_route = false
}
`, bridge, subnet)
}

// bridgeConflist is a CNI network of the same plugins as keel's default
// network (bridge with host-local IPAM, its leases in ipamDir, portmap,
// firewall) on a bridge of its own, with no masquerade: what containerd
// gets beside keel (ctrbench in the bridge figure, `ctr run --cni`; ctrdcri
// for containerd's CRI).
func bridgeConflist(name, bridge, subnet, ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
`, name, bridge, subnet, ipamDir)
}

// cniMountNS makes a mount namespace, pinned at a file under dir, where
// go-cni's fixed paths hold the bench network: /etc/cni/net.d (an overlay
// over the host's /etc) has bridgeConflist's ctrbench, /opt/cni/bin is Debian's
// /usr/lib/cni, and libcni's cache (/var/lib/cni) lands in an overlay
// too. ctr has no flag for any of them; the host's /etc, /opt and
// /var/lib are left as they were. It returns the pin, for nsenter --mount.
func cniMountNS(dir string) (string, error) {
	for _, d := range []string{"etc-upper", "etc-work", "lib-upper", "lib-work", "opt", "ns", "ipam"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return "", err
		}
	}
	conf := filepath.Join(dir, "ctrbench.conflist")
	if err := os.WriteFile(conf, []byte(bridgeConflist("ctrbench", "ctrbench0", "10.232.0.0/24", filepath.Join(dir, "ipam"))), 0o600); err != nil {
		return "", err
	}
	nsDir := filepath.Join(dir, "ns")
	pin := filepath.Join(nsDir, "mnt")
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		return "", err
	}
	// A mount namespace is pinned only on a mount of private propagation.
	script := fmt.Sprintf(`set -e
mount --bind %[1]s %[1]s
mount --make-private %[1]s
unshare --mount=%[2]s --propagation private sh -ec '
mount -t overlay overlay -o lowerdir=/etc,upperdir=%[3]s,workdir=%[4]s /etc
mkdir -p /etc/cni/net.d
cp %[5]s /etc/cni/net.d/
mount --bind %[6]s /opt
mkdir -p /opt/cni/bin
mount --bind /usr/lib/cni /opt/cni/bin
mount -t overlay overlay -o lowerdir=/var/lib,upperdir=%[7]s,workdir=%[8]s /var/lib'
`, nsDir, pin, filepath.Join(dir, "etc-upper"), filepath.Join(dir, "etc-work"), conf, filepath.Join(dir, "opt"),
		filepath.Join(dir, "lib-upper"), filepath.Join(dir, "lib-work"))
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount namespace for ctr --cni: %v: %s", err, out)
	}
	return pin, nil
}

// BenchmarkFigureRunNetwork: `run --rm` of busybox `true` with bridge
// networking, ms: `keel run --rm --net bridge` (keeld pins a network
// namespace and runs CNI ADD before the task and DEL after it) vs `ctr
// run --rm --cni` (ctr runs go-cni itself against the task's namespace),
// both through the same Debian CNI plugins (bridge, host-local, portmap,
// firewall). ctr reads its CNI config only from fixed paths, so it runs
// through nsenter into a mount namespace that has them: nsenter's exec
// (about 1 ms) counts on containerd's side. The reference is keel's own
// `run --rm --net none` in the same round: what networking costs.
func BenchmarkFigureRunNetwork(b *testing.B) {
	ctrBins(b)
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/portmap"} {
		if _, err := os.Stat(p); err != nil {
			b.Skipf("CNI plugins not installed (apt-get install containernetworking-plugins): %v", err)
		}
	}
	d, c, ref := busyboxOnBoth(b, benchNetwork)
	pin, err := cniMountNS(filepath.Join(c.dir, "cni"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		unmountUnder(filepath.Join(c.dir, "cni"))
		exec.Command("ip", "link", "del", "ctrbench0").Run()
		exec.Command("ip", "link", "del", "keelbench0").Run()
	}()

	seq := func(round int, name string, one func(id string) error) ([]float64, error) {
		var ts []float64
		for i := range runsPerRound {
			t, err := timed(func() error { return one(fmt.Sprintf("r%d-%s-%d", round, name, i)) })
			if err != nil {
				return nil, err
			}
			ts = append(ts, t)
		}
		return []float64{medianOf(ts)}, nil
	}
	keelRun := func(net string) side {
		return func(ctx context.Context, round int) ([]float64, error) {
			return seq(round, net, func(id string) error {
				_, err := d.keel(ctx, "run", "--rm", "--net", net, ref, id, "/bin/busybox", "true")
				return err
			})
		}
	}
	figs := []figure{{order: 62, name: "`run --rm` of busybox `true`, bridge networking (CNI)", unit: "ms", ref: "keel --net none"}}
	comparePairs(b, figs, sides{
		keel: keelRun("bridge"),
		containerd: func(ctx context.Context, round int) ([]float64, error) {
			return seq(round, "cni", func(id string) error {
				args := []string{"--mount=" + pin, "ctr", "--address", c.socket(), "--namespace", namespace,
					"run", "--rm", "--cni", "--seccomp", "--snapshotter", "overlayfs", ref, id, "/bin/busybox", "true"}
				if out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput(); err != nil {
					return fmt.Errorf("ctr run --cni: %v: %s", err, out)
				}
				return nil
			})
		},
		ref: keelRun("none"),
	})
}
