package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// TestCRICritestFixes: what critest checks and keel-cri once got wrong,
// as a kubelet meets it: a container the OOM killer ends reports
// OOMKilled and 137; attach to an interactive shell (stdin, stdin_once,
// no tty) echoes a command's output; GetContainerEvents streams a
// container's created, started, stopped and deleted in order, with its
// pod's status; an image's VOLUME gets a directory of the container's,
// holding the image's content there, removed with the container.
func TestCRICritestFixes(t *testing.T) {
	t.Parallel()
	k, rs, is, ref := startCRIBusybox(t)
	ctx := t.Context()
	pod, podCfg := criPod(t, rs, "fixes")

	t.Run("OOMKilled", func(t *testing.T) {
		cfg := boxConfig(ref, "oom", "dd if=/dev/zero of=/dev/null bs=20M")
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 15 << 20, MemorySwapLimitInBytes: 15 << 20}
		id := criContainer(t, rs, pod, podCfg, cfg)
		st := waitExited(t, rs, id)
		if st.Reason != "OOMKilled" || st.ExitCode != 137 {
			t.Errorf("status: reason %q, exit code %d, message %q; want OOMKilled, 137", st.Reason, st.ExitCode, st.Message)
		}
	})

	t.Run("Attach", func(t *testing.T) {
		// critest's: an interactive shell, stdin kept open for the first
		// attach, no terminal.
		cfg := boxConfig(ref, "shell", "")
		cfg.Command, cfg.Args = []string{"/bin/sh"}, nil
		cfg.Stdin, cfg.StdinOnce = true, true
		cfg.LogPath = "" // critest's has none: keeld keeps the output
		id := criContainer(t, rs, pod, podCfg, cfg)
		resp, err := rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		// `echo -n`: output with no newline after it must reach the
		// attach while the shell waits for more.
		out := syncBuffer{until: "hello", seen: make(chan struct{})}
		var errb syncBuffer
		stdin, typing := io.Pipe()
		seenLive := make(chan bool, 1)
		go func() {
			defer typing.Close()
			if _, err := typing.Write([]byte("echo -n hello\n")); err != nil {
				seenLive <- false
				return
			}
			// Stdin stays open until the output is seen (or not).
			select {
			case <-out.seen:
				seenLive <- true
			case <-time.After(settle):
				seenLive <- false
			}
		}()
		// The end of stdin ends the shell (stdin_once), and the attach
		// with it.
		err = stream(t, resp.Url, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errb})
		if err != nil || out.String() != "hello" || errb.String() != "" {
			t.Errorf("attach: err %v, stdout %q, stderr %q; want stdout \"hello\"", err, out.String(), errb.String())
		}
		if !<-seenLive {
			t.Errorf("the output reached the attach only when the shell ended")
		}
		if st := waitExited(t, rs, id); st.ExitCode != 0 {
			t.Errorf("the shell's exit at its stdin's end: %d, want 0", st.ExitCode)
		}
	})

	t.Run("ImageVolume", func(t *testing.T) {
		img, err := registry.BuildImage(registry.ImageOptions{
			Arch: runtime.GOARCH, Files: map[string]string{"data/seed": "from the image\n"}, Volumes: []string{"/data", "/empty"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := k.reg.PushImage(ctx, "e2e/volumes", "v1", img); err != nil {
			t.Fatal(err)
		}
		vref := k.reg.Host + "/e2e/volumes:v1"
		if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: vref}}); err != nil {
			t.Fatal(err)
		}
		// Two containers of the image: each has volumes of its own, the
		// image's content in them, writable, not the image's snapshot.
		script := `cat /data/seed; echo $1 > /data/mine; ls /empty | wc -l; grep -c " /data " /proc/mounts; touch /empty/x; sleep 3600`
		var ids []string
		for _, name := range []string{"vol-a", "vol-b"} {
			cfg := boxConfig(vref, name, script)
			cfg.Args = append(cfg.Args, "sh", name)
			id := criContainer(t, rs, pod, podCfg, cfg)
			ids = append(ids, id)
			want := []string{"stdout F from the image", "stdout F 0", "stdout F 1"}
			path := filepath.Join(podCfg.LogDirectory, name, "0.log")
			eventually(t, settle, name+"'s output", func() error {
				if got := logLines(t, path); !slices.Equal(got, want) {
					return fmt.Errorf("log %q, want %q", got, want)
				}
				return nil
			})
		}
		info := k.client(t, "k8s.io")
		kinfo, err := info.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(kinfo.Root, "cri", "volumes", "k8s.io")
		for i, id := range ids {
			got, err := os.ReadFile(filepath.Join(dir, id, "0", "mine"))
			if want := []string{"vol-a", "vol-b"}[i] + "\n"; err != nil || string(got) != want {
				t.Errorf("container %s's /data/mine on the host: %q, %v; want %q", id, got, err, want)
			}
		}
		if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ids[0]}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, ids[0])); !os.IsNotExist(err) {
			t.Errorf("container %s removed, its volumes: %v", ids[0], err)
		}
		// Removed behind keel-cri's back: its next start sweeps the
		// volumes of containers that are gone.
		k.ok("-n", "k8s.io", "container", "rm", "--force", ids[1])
		if err := syscall.Kill(k.waitCRI(0), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		k.waitCRI(1)
		if _, err := os.Stat(filepath.Join(dir, ids[1])); !os.IsNotExist(err) {
			t.Errorf("container %s removed with keel, keel-cri restarted: its volumes: %v", ids[1], err)
		}
	})

	t.Run("GetContainerEvents", func(t *testing.T) {
		events, err := rs.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		// The stream is established once its headers arrive: an event
		// after that is in it.
		if _, err := events.Header(); err != nil {
			t.Fatal(err)
		}
		// The statuses are read as each event is sent: the container is
		// removed once its stop was received, so it is among them until
		// its delete.
		id := criContainer(t, rs, pod, podCfg, boxConfig(ref, "evented", "exit 0"))
		want := []runtimeapi.ContainerEventType{
			runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
			runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
		}
		var got []runtimeapi.ContainerEventType
		for len(got) < len(want) {
			ev, err := events.Recv()
			if err != nil {
				t.Fatalf("events after %v: %v", got, err)
			}
			if ev.ContainerId != id {
				continue // the other subtests' containers
			}
			got = append(got, ev.ContainerEventType)
			if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
				if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
					t.Fatal(err)
				}
			}
			if ev.PodSandboxStatus.GetId() != pod || ev.PodSandboxStatus.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY || ev.CreatedAt == 0 {
				t.Errorf("%v: pod status %v, created at %d; want pod %s ready", ev.ContainerEventType, ev.PodSandboxStatus, ev.CreatedAt, pod)
			}
			listed := slices.ContainsFunc(ev.ContainersStatuses, func(s *runtimeapi.ContainerStatus) bool { return s.Id == id })
			if listed == (ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT) {
				t.Errorf("%v: container statuses %v", ev.ContainerEventType, statusIDs(ev.ContainersStatuses))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})
}

func statusIDs(sts []*runtimeapi.ContainerStatus) string {
	var out []string
	for _, s := range sts {
		out = append(out, fmt.Sprintf("%s(%v)", s.Id, s.State))
	}
	return strings.Join(out, ", ")
}

// startCRIBusybox is startCRIPodKeeld with the fixture's busybox pulled
// through the CRI: keeld, the CRI's clients and the image's reference.
func startCRIBusybox(t *testing.T) (*criKeeld, runtimeapi.RuntimeServiceClient, runtimeapi.ImageServiceClient, string) {
	t.Helper()
	k := startCRIPodKeeld(t)
	rs, is := k.criClients(t)
	ref := k.reg.Host + "/e2e/busybox:v1"
	if _, err := is.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	return k, rs, is, ref
}
