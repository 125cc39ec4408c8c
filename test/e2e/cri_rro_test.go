package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIRecursiveReadOnly: keel-cri reports its runtime handlers (the
// default one and runc) with recursive read-only mounts, as runc and this
// kernel can make them; a recursively read-only mount is read-only down to
// a tmpfs mounted below it on the host, where a read-only one leaves that
// writable; one that is read-write or not private is refused.
func TestCRIRecursiveReadOnly(t *testing.T) {
	t.Parallel()
	_, rs, _, ref := startCRIBusybox(t)
	ctx := t.Context()
	st, err := rs.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
		if !h.GetFeatures().GetRecursiveReadOnlyMounts() {
			t.Errorf("handler %q: no recursive read-only mounts", h.Name)
		}
	}
	if strings.Join(names, ",") != ",runc" {
		t.Errorf("runtime handlers %q, want the default one and runc", names)
	}

	host := t.TempDir()
	sub := filepath.Join(host, "tmpfs")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })

	pod, podCfg := criPod(t, rs, "rro")
	cfg := boxConfig(ref, "vol", "exec sleep 1000")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/ro", HostPath: host, Readonly: true},
		{ContainerPath: "/rro", HostPath: host, Readonly: true, RecursiveReadOnly: true},
	}
	id := criContainer(t, rs, pod, podCfg, cfg)
	for dir, want := range map[string]string{"/ro": "writable", "/rro": "Read-only file system"} {
		resp, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "touch " + dir + "/tmpfs/f 2>&1 && echo writable"}, Timeout: 30})
		if err != nil || !strings.Contains(string(resp.Stdout), want) {
			t.Errorf("touch in %s's submount: %q, %v; want %q", dir, resp.GetStdout(), err, want)
		}
	}
	cst, _ := containerStatus(t, rs, id)
	if len(cst.Mounts) != 2 || cst.Mounts[0].RecursiveReadOnly || !cst.Mounts[1].RecursiveReadOnly {
		t.Errorf("status mounts %v", cst.Mounts)
	}

	for name, m := range map[string]*runtimeapi.Mount{
		"read-write":        {ContainerPath: "/m", HostPath: host, RecursiveReadOnly: true},
		"host to container": {ContainerPath: "/m", HostPath: host, Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
	} {
		bad := boxConfig(ref, "bad", "true")
		bad.Mounts = []*runtimeapi.Mount{m}
		_, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: bad, SandboxConfig: podCfg})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s recursive read-only mount: %v, want InvalidArgument", name, err)
		}
	}
}
