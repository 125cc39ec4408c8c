package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/cri"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/test/critools"
)

// criSide is one CRI runtime under the CRI figure: its endpoint, crictl
// and the CRI's generated client on it.
type criSide struct {
	endpoint, crictl string
	rs               runtimeapi.RuntimeServiceClient
}

// run is crictl args against the side; its stdout, trimmed.
func (s criSide) run(ctx context.Context, args ...string) (string, error) {
	all := append([]string{"--runtime-endpoint", s.endpoint, "--image-endpoint", s.endpoint, "--timeout", "60s"}, args...)
	cmd := exec.CommandContext(ctx, s.crictl, all...)
	// No /etc/crictl.yaml: its absence is only warned about.
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// openCRI waits until a CRI answers at endpoint (its daemon starts it) and
// connects the CRI's client to it.
func openCRI(b *testing.B, endpoint, crictl string) criSide {
	s := criSide{endpoint: endpoint, crictl: crictl}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		_, err := s.run(ctx, "version")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("no CRI at %s: %v", endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	s.rs = runtimeapi.NewRuntimeServiceClient(conn)
	return s
}

// removeAllPods stops and removes every pod of the side (the runtime then
// releases each pod's network).
func (s criSide) removeAllPods() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.run(ctx, "rmp", "--all", "--force"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	}
}

// pushPauseImage pushes keel's pause image (cri.PauseImageBlobs of the
// keel-pause that keel-cri packages) to reg, for containerd's
// sandbox_image: both sides run the same pause.
func pushPauseImage(b *testing.B, reg *registry.Registry) string {
	bin, err := binDir()
	if err != nil {
		b.Fatal(err)
	}
	pause, err := os.ReadFile(filepath.Join(bin, "keel-pause"))
	if err != nil {
		b.Fatal(err)
	}
	m, c, l, err := cri.PauseImageBlobs(pause)
	if err != nil {
		b.Fatal(err)
	}
	img := &registry.Image{Manifest: registry.NewBlob(ocispec.MediaTypeImageManifest, m),
		Config: registry.NewBlob(ocispec.MediaTypeImageConfig, c), Layers: []registry.Blob{registry.NewBlob(ocispec.MediaTypeImageLayer, l)}}
	if err := reg.PushImage(context.Background(), "bench/pause", "keel", img); err != nil {
		b.Fatal(err)
	}
	return reg.Host + "/bench/pause:keel"
}

// ctrdCRIConfig is containerd's CRI plugin as the CRI figure runs it: the
// sandbox image pause, overlayfs, runc v2 with its state under dir, pods
// on bridgeConflist's ctrdcri (conf under dir), and regHost over plain
// HTTP (hosts.toml under dir).
func ctrdCRIConfig(b *testing.B, dir, pause, regHost string) string {
	confDir, hosts := filepath.Join(dir, "net.d"), filepath.Join(dir, "certs.d", regHost)
	for _, d := range []string{confDir, hosts} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	conf := bridgeConflist("ctrdcri", "ctrdcri0", "10.234.0.0/24", filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(confDir, "10-ctrdcri.conflist"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+regHost, "http://"+regHost)
	if err := os.WriteFile(filepath.Join(hosts, "hosts.toml"), []byte(toml), 0o644); err != nil {
		b.Fatal(err)
	}
	return critools.ContainerdCRI{SandboxImage: pause, RuncRoot: filepath.Join(dir, "runc"), CNIConfDir: confDir,
		RegistryConfigPath: filepath.Dir(hosts)}.TOML()
}

// BenchmarkFigureCRIRun: a pod with one busybox container made and
// started through the CRI, ms, keel-cri (keeld's cri block, keel's own
// pause image, overlay, runc) vs containerd 1.6's CRI plugin (the same
// pause executable as an image from the loopback registry, overlayfs,
// containerd-shim-runc-v2), both pulled beforehand, the pod on a CNI
// bridge of its own on each side (the same Debian plugins). Two rows:
// `crictl runp` + `crictl create` + `crictl start` (three crictl
// processes, as an operator runs them; pod and container from JSON files),
// and the same three calls (RunPodSandbox, CreateContainer,
// StartContainer) through the CRI's Go client, without crictl's process
// starts. A round is the median of runsPerRound pods; each pod is
// removed (rmp) after its timing, untimed.
func BenchmarkFigureCRIRun(b *testing.B) {
	ctrBins(b)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		b.Skipf("CNI plugins not installed (apt-get install containernetworking-plugins): %v", err)
	}
	crictl := critools.Tool(b, "crictl")
	ctx := context.Background()
	// The bridges go last, after each side removed its pods.
	b.Cleanup(func() {
		exec.Command("ip", "link", "del", "keelcri0").Run()
		exec.Command("ip", "link", "del", "ctrdcri0").Run()
	})
	reg, ref := busyboxRegistry(b)
	pause := pushPauseImage(b, reg)

	// keel-cri's socket outside keeld's dir, which is made at its start.
	sock := filepath.Join(b.TempDir(), "cri.sock")
	d, err := startDaemonPlugins(ctx, false, benchSnapshotter{name: "overlay"},
		defaultPlugins(reg.Host)+keelNetwork("keelcri0", "10.233.0.0/24")+fmt.Sprintf("cri {\n  enabled = true\n  address = %q\n}\n", sock))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.stop)
	keel := openCRI(b, "unix://"+sock, crictl)
	b.Cleanup(keel.removeAllPods)

	c, err := startContainerd(ctx, ctrdOptions{criConfig: ctrdCRIConfig(b, b.TempDir(), pause, reg.Host)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.stop)
	ctrd := openCRI(b, "unix://"+c.socket(), crictl)
	b.Cleanup(ctrd.removeAllPods)

	for _, s := range []criSide{keel, ctrd} {
		if _, err := s.run(ctx, "pull", ref); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := ctrd.run(ctx, "pull", pause); err != nil {
		b.Fatal(err)
	}

	work := b.TempDir()
	ctrCfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "box"},
		Image:    &runtimeapi.ImageSpec{Image: ref},
		Command:  []string{"/bin/busybox", "sleep", "600"},
		LogPath:  "box.log",
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	ctrFile := filepath.Join(work, "box.json")
	if err := os.WriteFile(ctrFile, fmt.Appendf(nil, `{"metadata": {"name": "box"}, "image": {"image": %q},
  "command": ["/bin/busybox", "sleep", "600"], "log_path": "box.log", "linux": {}}`, ref), 0o644); err != nil {
		b.Fatal(err)
	}
	podCfg := func(name string) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: "uid-" + name, Attempt: 1},
			Hostname:     name,
			LogDirectory: filepath.Join(work, "logs", name),
			Linux:        &runtimeapi.LinuxPodSandboxConfig{},
		}
	}
	// viaCrictl makes pod name with crictl, timed, and returns its id.
	viaCrictl := func(ctx context.Context, s criSide, name string) (string, float64, error) {
		podFile := filepath.Join(work, name+".json")
		cfg := podCfg(name)
		if err := os.WriteFile(podFile, fmt.Appendf(nil, `{"metadata": {"name": %q, "namespace": "bench", "uid": %q, "attempt": 1},
  "hostname": %q, "log_directory": %q, "linux": {}}`, name, cfg.Metadata.Uid, name, cfg.LogDirectory), 0o644); err != nil {
			return "", 0, err
		}
		var pod string
		t, err := timed(func() error {
			var err error
			if pod, err = s.run(ctx, "runp", podFile); err != nil {
				return err
			}
			id, err := s.run(ctx, "create", pod, ctrFile, podFile)
			if err != nil {
				return err
			}
			_, err = s.run(ctx, "start", id)
			return err
		})
		return pod, t, err
	}
	// viaAPI makes pod name through the CRI's client, timed.
	viaAPI := func(ctx context.Context, s criSide, name string) (string, float64, error) {
		cfg := podCfg(name)
		var pod string
		t, err := timed(func() error {
			run, err := s.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				return err
			}
			pod = run.PodSandboxId
			created, err := s.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: ctrCfg, SandboxConfig: cfg})
			if err != nil {
				return err
			}
			_, err = s.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId})
			return err
		})
		return pod, t, err
	}
	// round measures one round of a side: runsPerRound pods each way,
	// each removed after its timing.
	round := func(s criSide, tag string) side {
		return func(ctx context.Context, r int) ([]float64, error) {
			var out []float64
			for way, mk := range []func(context.Context, criSide, string) (string, float64, error){viaCrictl, viaAPI} {
				var ts []float64
				for i := range runsPerRound {
					pod, t, err := mk(ctx, s, fmt.Sprintf("%s-r%d-w%d-%d", tag, r, way, i))
					if err != nil {
						return nil, err
					}
					ts = append(ts, t)
					if _, err := s.run(ctx, "rmp", "--force", pod); err != nil {
						return nil, err
					}
				}
				out = append(out, medianOf(ts))
			}
			return out, nil
		}
	}
	figs := []figure{
		{order: 63, name: "CRI: `crictl runp` + `create` + `start` of a busybox container (CNI pod)", unit: "ms"},
		{order: 64, name: "CRI: RunPodSandbox + CreateContainer + StartContainer through the CRI's Go client", unit: "ms"},
	}
	comparePairs(b, figs, sides{keel: round(keel, "keel"), containerd: round(ctrd, "ctrd")})
}
