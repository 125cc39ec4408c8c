package e2e

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/cri"
	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// criKeeld is a keeld whose cri block runs keel-cri, with a registry
// holding busybox as e2e/busybox:v1 and :latest.
type criKeeld struct {
	*keeld
	reg    *registry.Registry
	img    *registry.Image
	socket string // the CRI's
	config string // keeld's config file
}

// startCRIKeeld starts keeld with native, content, a resolver reaching a
// loopback registry over plain HTTP, and the cri block enabled; extra is
// added to the config. It waits until keel-cri serves.
func startCRIKeeld(t *testing.T, extra func(e *env) string) *criKeeld {
	t.Helper()
	return startCRIKeeldAuth(t, registry.Open, extra)
}

// startCRIKeeldAuth is startCRIKeeld with a registry that authenticates
// clients by auth; the resolver's config has no credentials.
func startCRIKeeldAuth(t *testing.T, auth registry.Auth, extra func(e *env) string) *criKeeld {
	t.Helper()
	needRun(t)
	reg, err := registry.Start(t, registry.Options{Auth: auth})
	if errors.Is(err, registry.ErrNoRegistry) {
		testkit.SkipOrFail(t, "%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, User: "1000:1000"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"v1", "latest"} {
		if err := reg.PushImage(t.Context(), "e2e/busybox", tag, img); err != nil {
			t.Fatal(err)
		}
	}
	block, err := resolverPlugin([]byte(plainHTTP(reg.Host)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	socket := filepath.Join(e.dir, "cri.sock")
	body := pullPlugins + block + fmt.Sprintf("cri {\n  enabled = true\n  address = %q\n}\n", socket)
	if extra != nil {
		body += extra(e)
	}
	config := e.config(t, body)
	k := &criKeeld{keeld: e.startWith(t, config), reg: reg, img: img, socket: socket, config: config}
	k.waitCRI(0)
	return k
}

// waitCRI waits until keeld reports keel-cri running with restarts
// restarts, and returns its pid.
func (k *criKeeld) waitCRI(restarts int) int {
	k.t.Helper()
	c := k.client(k.t, "default")
	var pid int
	eventually(k.t, settle, "keel-cri running", func() error {
		info, err := c.Info(k.t.Context())
		if err != nil {
			return err
		}
		st := info.CRI
		if st == nil || st.State != "running" || st.Restarts != restarts || !alive(st.Pid) {
			return fmt.Errorf("keel-cri: %+v", st)
		}
		pid = st.Pid
		return nil
	})
	return pid
}

// criClients connects the CRI's generated clients to k's keel-cri.
func (k *criKeeld) criClients(t *testing.T) (runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+k.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
}

// TestCRI drives keel-cri as a kubelet would, through k8s.io/cri-api's
// generated client: version, status, runtime config, the image service
// end to end; keel-cri killed is restarted by keeld and finds the images
// in keeld again; keeld's stop ends it.
func TestCRI(t *testing.T) {
	t.Parallel()
	k := startCRIKeeld(t, nil)
	rs, is := k.criClients(t)
	ctx := t.Context()
	repo := k.reg.Host + "/e2e/busybox"
	id := k.img.Config.Desc.Digest.String()

	v, err := rs.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "keel" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Errorf("version %+v", v)
	}

	st, err := rs.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range st.Status.Conditions {
		if !cond.Status {
			t.Errorf("condition %s false: %s: %s", cond.Type, cond.Reason, cond.Message)
		}
	}
	if len(st.Status.Conditions) != 2 || !strings.Contains(st.Info["config"], `"namespace":"k8s.io"`) {
		t.Errorf("status %v", st)
	}

	rc, err := rs.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Linux.CgroupDriver != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("cgroup driver %v", rc.Linux.CgroupDriver)
	}

	// The pod CIDR is kept by keeld, on the CRI's namespace.
	if _, err := rs.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{
		NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.1.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	ns, err := k.client(t, "default").Namespaces().Get(ctx, "k8s.io")
	if err != nil || ns.Labels[cri.PodCIDRLabel] != "10.244.1.0/24" {
		t.Errorf("namespace k8s.io %+v, %v: want label %s", ns, err, cri.PodCIDRLabel)
	}
	_, err = rs.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{
		NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.1.7/33"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad pod CIDR: %v, want InvalidArgument", err)
	}

	// A call keel-cri does not serve says so, naming it.
	_, err = rs.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: "x"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "CheckpointContainer is not served yet") {
		t.Errorf("CheckpointContainer: %v", err)
	}

	// Pulls: by tag, and with none (:latest); both names are one image.
	for _, ref := range []string{repo + ":v1", repo} {
		resp, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if resp.ImageRef != id {
			t.Errorf("pull %s: image ref %s, want the config's digest %s", ref, resp.ImageRef, id)
		}
	}
	_, err = is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: repo + ":nope"}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("pull of a missing tag: %v, want NotFound", err)
	}
	_, err = is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:bad tag"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("pull of a malformed ref: %v, want InvalidArgument", err)
	}

	var size uint64 = uint64(k.img.Manifest.Desc.Size + k.img.Config.Desc.Size)
	for _, l := range k.img.Layers {
		size += uint64(l.Desc.Size)
	}
	want := &runtimeapi.Image{
		Id:          id,
		RepoTags:    []string{repo + ":latest", repo + ":v1"},
		RepoDigests: []string{repo + "@" + k.img.Manifest.Desc.Digest.String()},
		Size:        size,
		Uid:         &runtimeapi.Int64Value{Value: 1000},
	}
	checkImage := func(t *testing.T, what string, got *runtimeapi.Image) {
		t.Helper()
		if got == nil || got.Id != want.Id || !slices.Equal(got.RepoTags, want.RepoTags) || !slices.Equal(got.RepoDigests, want.RepoDigests) ||
			got.Size != want.Size || got.Uid.GetValue() != 1000 || got.Username != "" || got.Pinned {
			t.Errorf("%s: image %v\nwant %v", what, got, want)
		}
	}
	listed := func(t *testing.T, filter string) []*runtimeapi.Image {
		t.Helper()
		req := &runtimeapi.ListImagesRequest{}
		if filter != "" {
			req.Filter = &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: filter}}
		}
		resp, err := is.ListImages(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return unpinned(resp.Images)
	}
	if l := listed(t, ""); len(l) != 1 {
		t.Fatalf("list: %v, want one image", l)
	} else {
		checkImage(t, "list", l[0])
	}
	// The records are keel images of namespace k8s.io, by normalized names.
	if out := withoutPause(k.ok("-n", "k8s.io", "image", "ls", "-q")); out != repo+":latest\n"+repo+":v1\n" {
		t.Errorf("keel -n k8s.io image ls -q:\n%s", out)
	}

	for _, ref := range []string{repo + ":v1", repo, id, strings.TrimPrefix(id, "sha256:"), want.RepoDigests[0]} {
		if l := listed(t, ref); len(l) != 1 {
			t.Errorf("list filtered by %s: %v", ref, l)
		}
		resp, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true})
		if err != nil {
			t.Fatalf("status %s: %v", ref, err)
		}
		checkImage(t, "status "+ref, resp.Image)
		if !strings.Contains(resp.Info["info"], `"imageSpec"`) {
			t.Errorf("status %s: verbose info %v", ref, resp.Info)
		}
	}
	for _, ref := range []string{repo + ":v2", "sha256:" + strings.Repeat("0", 64), "docker.io/library/busybox"} {
		if l := listed(t, ref); len(l) != 0 {
			t.Errorf("list filtered by %s: %v, want none", ref, l)
		}
		resp, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || resp.Image != nil {
			t.Errorf("status of %s: %v, %v; want no image and no error", ref, resp, err)
		}
	}

	fs, err := is.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	root := k.env.root
	if len(fs.ImageFilesystems) != 2 {
		t.Fatalf("image filesystems %v", fs.ImageFilesystems)
	}
	sn, ct := fs.ImageFilesystems[0], fs.ImageFilesystems[1]
	if sn.FsId.Mountpoint != filepath.Join(root, "plugins", "snapshotter.native") || sn.UsedBytes.Value == 0 || sn.InodesUsed.Value == 0 {
		t.Errorf("snapshotter usage %v", sn)
	}
	if ct.FsId.Mountpoint != filepath.Join(root, "plugins", "content.local") || ct.UsedBytes.Value < size || ct.InodesUsed.Value < uint64(2+len(k.img.Layers)) {
		t.Errorf("content usage %v, want at least %d bytes in %d blobs", ct, size, 2+len(k.img.Layers))
	}

	// keel-cri killed: keeld starts it again, and it lists the images
	// from keeld.
	pid := k.waitCRI(0)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if newPid := k.waitCRI(1); newPid == pid {
		t.Fatalf("keel-cri pid %d after its kill", newPid)
	}
	if l := listed(t, ""); len(l) != 1 {
		t.Fatalf("list after keel-cri's restart: %v", l)
	} else {
		checkImage(t, "list after restart", l[0])
	}
	info, err := k.client(t, "default").Info(ctx)
	if err != nil || !strings.Contains(info.CRI.LastError, "signal: killed") {
		t.Errorf("keel-cri's last error after its kill: %+v, %v", info.CRI, err)
	}
	if out := k.ok("info"); !strings.Contains(out, "CRI:") || !strings.Contains(out, "running "+k.socket) {
		t.Errorf("keel info does not show keel-cri running:\n%s", out)
	}

	// Remove by id takes every name; again is no error.
	for range 2 {
		if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
			t.Fatal(err)
		}
	}
	if l := listed(t, ""); len(l) != 0 {
		t.Errorf("list after remove: %v", l)
	}
	if out := withoutPause(k.ok("-n", "k8s.io", "image", "ls", "-q")); out != "" {
		t.Errorf("keel images left in k8s.io: %s", out)
	}

	// keeld's stop ends keel-cri and its socket.
	pid = k.waitCRI(1)
	if err := k.stop(settle); err != nil {
		t.Fatalf("keeld stop: %v", err)
	}
	eventually(t, settle, "keel-cri gone with keeld", func() error {
		if alive(pid) {
			return errors.New("keel-cri still runs")
		}
		return nil
	})
	if _, err := rs.Version(ctx, &runtimeapi.VersionRequest{}); err == nil {
		t.Error("keel-cri answers after keeld stopped")
	}
}

// TestCRINetworkNotReady: with no CNI plugin where keeld looks, Status
// says the network is not ready and names what is missing, while the
// runtime is ready.
func TestCRINetworkNotReady(t *testing.T) {
	t.Parallel()
	k := startCRIKeeld(t, func(e *env) string {
		n := testNetFor(t, e.root)
		return fmt.Sprintf("\nnetwork {\n  cni_bin_dirs = [%q]\n  bridge = %q\n  subnet = %q\n}\n", t.TempDir(), n.bridge, n.subnet)
	})
	rs, _ := k.criClients(t)
	st, err := rs.Status(t.Context(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	conds := map[string]*runtimeapi.RuntimeCondition{}
	for _, c := range st.Status.Conditions {
		conds[c.Type] = c
	}
	if c := conds[runtimeapi.RuntimeReady]; c == nil || !c.Status {
		t.Errorf("RuntimeReady %v", c)
	}
	c := conds[runtimeapi.NetworkReady]
	if c == nil || c.Status || c.Reason != "NetworkPluginNotReady" || !strings.Contains(c.Message, "CNI plugins not installed: bridge") {
		t.Errorf("NetworkReady %v, want false naming the bridge plugin", c)
	}
}

// TestCRIPullWithAuth: the CRI's auth config logs in to a registry whose
// login the resolver's config does not have (htpasswd Basic, and a token
// service), for that pull alone: a pull without it, or with a wrong one,
// is refused, also right after one with it succeeded (no token it earned
// serves another call).
func TestCRIPullWithAuth(t *testing.T) {
	t.Parallel()
	for _, auth := range []registry.Auth{registry.Basic, registry.Token} {
		t.Run(auth.String(), func(t *testing.T) {
			t.Parallel()
			k := startCRIKeeldAuth(t, auth, nil)
			_, is := k.criClients(t)
			ref := k.reg.Host + "/e2e/busybox:v1"
			pull := func(a *runtimeapi.AuthConfig) error {
				_, err := is.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Auth: a})
				return err
			}
			good := &runtimeapi.AuthConfig{Username: k.reg.Username, Password: k.reg.Password, ServerAddress: k.reg.Host}
			encoded := &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte(k.reg.Username + ":" + k.reg.Password))}
			wrong := &runtimeapi.AuthConfig{Username: k.reg.Username, Password: "not-" + k.reg.Password}
			for _, step := range []struct {
				name string
				auth *runtimeapi.AuthConfig
				code codes.Code
			}{
				{"none", nil, codes.PermissionDenied},
				{"wrong password", wrong, codes.PermissionDenied},
				{"username and password", good, codes.OK},
				{"none after a login", nil, codes.PermissionDenied},
				{"wrong password after a login", wrong, codes.PermissionDenied},
				{"auth", encoded, codes.OK},
				{"registry token", &runtimeapi.AuthConfig{RegistryToken: "t"}, codes.Unimplemented},
				{"malformed auth", &runtimeapi.AuthConfig{Auth: "%%%"}, codes.InvalidArgument},
			} {
				if err := pull(step.auth); status.Code(err) != step.code {
					t.Errorf("pull with %s: %v, want %v", step.name, err, step.code)
				}
			}
		})
	}
}

// TestCRIKeeldKilled: keeld killed with SIGKILL takes keel-cri with it;
// the next keeld starts it again, and what was pulled through the CRI is
// listed from keeld.
func TestCRIKeeldKilled(t *testing.T) {
	t.Parallel()
	k := startCRIKeeld(t, nil)
	_, is := k.criClients(t)
	ref := k.reg.Host + "/e2e/busybox:v1"
	if _, err := is.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	pid := k.waitCRI(0)
	k.kill()
	eventually(t, settle, "keel-cri gone with keeld", func() error {
		if alive(pid) {
			return errors.New("keel-cri still runs")
		}
		return nil
	})

	k.keeld = k.env.startWith(t, k.config)
	k.waitCRI(0)
	resp, err := is.ListImages(t.Context(), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Images = unpinned(resp.Images)
	if len(resp.Images) != 1 || resp.Images[0].Id != k.img.Config.Desc.Digest.String() || !slices.Equal(resp.Images[0].RepoTags, []string{ref}) {
		t.Errorf("images after keeld's restart: %v", resp.Images)
	}
}

// unpinned leaves out the pinned images: the sandbox image keel-cri makes
// at its start (TestCRIPods checks it).
func unpinned(images []*runtimeapi.Image) []*runtimeapi.Image {
	return slices.DeleteFunc(images, func(i *runtimeapi.Image) bool { return i.Pinned })
}

// withoutPause leaves the lines of keel's own pause image out of out.
func withoutPause(out string) string {
	var keep []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "localhost/keel/pause:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}
