package e2e

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/test/realimage"
)

// TestCRIRealImage runs the Debian image built the way real images are
// (debootstrap, then apt-get on top: nested whiteouts, an opaque dir)
// through the CRI as a kubelet would: pulled by PullImage, its status
// read, a job that checks the packages and logs to log_path, and a
// service exec'd into, as root and as a user the image's /etc/passwd
// names (RunAsUsername), which its status reports.
func TestCRIRealImage(t *testing.T) {
	t.Parallel()
	img := realimage.Get(t)
	k := startCRIPodKeeld(t)
	rs, is := k.criClients(t)
	ctx := t.Context()
	pushed, err := img.RegistryImage(runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.reg.PushImage(ctx, "e2e/debian", "bookworm", pushed); err != nil {
		t.Fatal(err)
	}
	ref := k.reg.Host + "/e2e/debian:bookworm"
	pullCtx, cancel := context.WithTimeout(ctx, 10*time.Minute) // the whole image, under load
	defer cancel()
	pulled, err := is.PullImage(pullCtx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || st.Image == nil {
		t.Fatalf("image status: %v %v", st, err)
	}
	if st.Image.Id != pulled.ImageRef || st.Image.Id != pushed.Config.Desc.Digest.String() || !slices.Contains(st.Image.RepoTags, ref) || st.Image.Size < 10<<20 {
		t.Errorf("image status %v: want id %s, tag %s, its size", st.Image, pushed.Config.Desc.Digest, ref)
	}

	pod, podCfg := criPod(t, rs, "debian")
	job := boxConfig(ref, "check", realImageCheck+"id -un\n")
	job.Linux.SecurityContext = nil // the image's user: root
	id := criContainer(t, rs, pod, podCfg, job)
	if st := waitExited(t, rs, id); st.ExitCode != 0 || st.Reason != "Completed" {
		t.Errorf("check job: %v\n%s", st, strings.Join(logLines(t, st.LogPath), "\n"))
	} else if got, want := logLines(t, st.LogPath), []string{
		"stdout F /usr/bin/" + realimage.Installed, "stdout F awk runs", "stdout F root",
	}; !slices.Equal(got, want) {
		t.Errorf("check job log %q, want %q", got, want)
	}

	svcCfg := boxConfig(ref, "svc", "exec sleep infinity")
	svcCfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "nobody"}
	svc := criContainer(t, rs, pod, podCfg, svcCfg)
	if st, _ := containerStatus(t, rs, svc); st.GetUser().GetLinux().GetUid() != 65534 || st.GetUser().GetLinux().GetGid() != 65534 ||
		!slices.Equal(st.GetUser().GetLinux().GetSupplementalGroups(), []int64{65534}) {
		t.Errorf("status user %v, want nobody's 65534:65534 and its group", st.GetUser())
	}
	for _, tc := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"id"}, "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"},
		{[]string{"sh", "-c", "echo $HOME"}, "/nonexistent\n"},
		{[]string{"dpkg-query", "-W", "-f=${Status}", realimage.Installed}, "install ok installed"},
		{[]string{"awk", "BEGIN { print 6 * 7 }"}, "42\n"},
	} {
		resp, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: svc, Cmd: tc.cmd, Timeout: 60})
		if err != nil || resp.ExitCode != 0 || string(resp.Stdout) != tc.want {
			t.Errorf("exec %q: %q (stderr %q, exit %d, %v), want %q", tc.cmd, resp.GetStdout(), resp.GetStderr(), resp.GetExitCode(), err, tc.want)
		}
	}
}
