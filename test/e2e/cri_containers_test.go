package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/sdk/crilog"
)

// criPod runs pod name with its logs in a directory of the test's and
// returns its id and config.
func criPod(t *testing.T, rs runtimeapi.RuntimeServiceClient, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := podConfig(name)
	cfg.LogDirectory = t.TempDir()
	run, err := rs.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return run.PodSandboxId, cfg
}

// boxConfig is a busybox container's config as a kubelet sends it, run
// as root, its log at <name>/0.log under the pod's log directory.
func boxConfig(ref, name string, script string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: name},
		Image:       &runtimeapi.ImageSpec{Image: ref},
		Command:     []string{"sh", "-c"},
		Args:        []string{script},
		Envs:        []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hello")}},
		Labels:      map[string]string{"app": name},
		Annotations: map[string]string{"note": "container " + name},
		LogPath:     name + "/0.log",
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			RunAsUser: &runtimeapi.Int64Value{Value: 0},
		}},
	}
}

// criContainer creates and starts a container of cfg in pod.
func criContainer(t *testing.T, rs runtimeapi.RuntimeServiceClient, pod string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	cr, err := rs.CreateContainer(t.Context(), &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("create %s: %v", cfg.Metadata.Name, err)
	}
	if _, err := rs.StartContainer(t.Context(), &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		t.Fatalf("start %s: %v", cfg.Metadata.Name, err)
	}
	return cr.ContainerId
}

func containerStatus(t *testing.T, rs runtimeapi.RuntimeServiceClient, id string) (*runtimeapi.ContainerStatus, podInfo) {
	t.Helper()
	resp, err := rs.ContainerStatus(t.Context(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatalf("status of container %s: %v", id, err)
	}
	var info podInfo
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatalf("container %s: verbose info %q: %v", id, resp.Info, err)
	}
	return resp.Status, info
}

// waitExited waits for container id to exit and returns its status.
func waitExited(t *testing.T, rs runtimeapi.RuntimeServiceClient, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	var st *runtimeapi.ContainerStatus
	eventually(t, settle, "container "+id+" exited", func() error {
		st, _ = containerStatus(t, rs, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("state %v", st.State)
		}
		return nil
	})
	return st
}

// logLines are the records of a CRI log as "stream tag content".
func logLines(t *testing.T, path string) []string {
	t.Helper()
	recs, err := crilog.ReadAll(path)
	if err != nil {
		t.Fatalf("log %s: %v", path, err)
	}
	var out []string
	for _, r := range recs {
		tag := "F"
		if r.Partial {
			tag = "P"
		}
		out = append(out, r.Stream+" "+tag+" "+string(r.Content))
	}
	return out
}

// TestCRIContainers runs containers in a pod through the CRI as a kubelet
// does: they share the pod's network, IPC and UTS namespaces and files,
// log to log_path in the CRI format, report exit codes and reasons, take
// exec, mounts and env; list filters; keel-cri killed (the containers
// come back from keeld); stop with a timeout (SIGTERM, then SIGKILL);
// remove.
func TestCRIContainers(t *testing.T) {
	t.Parallel()
	k, rs, _, ref := startCRIBusybox(t)
	ctx := t.Context()
	pod, podCfg := criPod(t, rs, "app")
	podSt, podPause := podStatus(t, rs, pod)

	// Jobs that end: their exit code, reason and output in their log.
	for _, tc := range []struct {
		name, script string
		code         int32
		reason       string
		lines        []string
	}{
		{"ok", `echo "$GREETING out"; echo err >&2`, 0, "Completed", []string{"stdout F hello out", "stderr F err"}},
		{"fails", "echo bye; exit 3", 3, "Error", []string{"stdout F bye"}},
	} {
		t.Run("job "+tc.name, func(t *testing.T) {
			id := criContainer(t, rs, pod, podCfg, boxConfig(ref, "job-"+tc.name, tc.script))
			st := waitExited(t, rs, id)
			if st.ExitCode != tc.code || st.Reason != tc.reason || st.StartedAt == 0 || st.FinishedAt < st.StartedAt || st.CreatedAt > st.StartedAt {
				t.Errorf("status %v: want exit %d, reason %s, created ≤ started ≤ finished", st, tc.code, tc.reason)
			}
			want := filepath.Join(podCfg.LogDirectory, "job-"+tc.name, "0.log")
			if st.LogPath != want {
				t.Errorf("log path %q, want %q", st.LogPath, want)
			}
			got := logLines(t, want)
			slices.Sort(got)
			wantLines := slices.Sorted(slices.Values(tc.lines))
			if !slices.Equal(got, wantLines) {
				t.Errorf("log %v, want %v", got, wantLines)
			}
			// keeld serves the log at the path keel-cri named, too.
			first := strings.SplitN(tc.lines[0], " ", 3)[2]
			if out := k.ok("-n", "k8s.io", "logs", id); !strings.Contains(out, first) {
				t.Errorf("keel logs: %q, want %q in it", out, first)
			}
		})
	}

	// A service: a mount of the host's, reading a FIFO it makes and
	// echoing what it reads.
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svcCfg := boxConfig(ref, "svc", "mkfifo /in; echo ready; while :; do cat /in; done")
	svcCfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: data, Readonly: true}}
	svc := criContainer(t, rs, pod, podCfg, svcCfg)
	st, svcInfo := containerStatus(t, rs, svc)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.Metadata.Name != "svc" || st.Image.Image != ref ||
		st.ImageId != k.img.Config.Desc.Digest.String() || !strings.HasPrefix(st.ImageRef, k.reg.Host+"/e2e/busybox@sha256:") ||
		st.Labels["app"] != "svc" || st.Annotations["note"] != "container svc" ||
		len(st.Mounts) != 1 || st.Mounts[0].HostPath != data || !st.Mounts[0].Readonly {
		t.Errorf("svc status %v", st)
	}
	execOut := func(t *testing.T, cmd string) string {
		t.Helper()
		resp, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: svc, Cmd: []string{"sh", "-c", cmd}, Timeout: 30})
		if err != nil || resp.ExitCode != 0 {
			t.Fatalf("exec %q: %v %v: %s", cmd, resp, err, resp.GetStderr())
		}
		return string(resp.Stdout)
	}
	t.Run("in its pod", func(t *testing.T) {
		for _, ns := range []string{"net", "ipc", "uts", "pid"} {
			pod, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", podPause.Pid, ns))
			got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", svcInfo.Pid, ns))
			if got == "" || got != pod {
				t.Errorf("%s namespace %s, the pod's %s", ns, got, pod)
			}
		}
		if ip := podSt.GetNetwork().GetIp(); ip == "" || !strings.Contains(execOut(t, "cat /proc/net/fib_trie"), ip) {
			t.Errorf("the pod's IP %q is not the container's", ip)
		}
		for cmd, want := range map[string]string{
			"hostname":          "app\n",
			"cat /etc/hostname": "app\n",
			"id -u":             "0\n",
			"echo $GREETING":    "hello\n",
			"cat /data/f":       "from the host\n",
		} {
			if got := execOut(t, cmd); got != want {
				t.Errorf("%s: %q, want %q", cmd, got, want)
			}
		}
		if !strings.Contains(execOut(t, "cat /etc/hosts"), podSt.GetNetwork().GetIp()) {
			t.Errorf("/etc/hosts lacks the pod's IP")
		}
		if r, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: svc, Cmd: []string{"sh", "-c", "echo x >/data/x"}, Timeout: 30}); err != nil || r.ExitCode == 0 {
			t.Errorf("a read-only mount took a write: %v %v", r, err)
		}
	})

	// ReopenContainerLog: cri_reopen_test.go.

	// One that ignores SIGTERM.
	stubborn := criContainer(t, rs, pod, podCfg, boxConfig(ref, "stubborn", "trap '' TERM; echo ready; while :; do cat /dev/zero >/dev/null; done"))

	list := func(t *testing.T, f *runtimeapi.ContainerFilter) []string {
		t.Helper()
		resp, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range resp.Containers {
			names = append(names, c.Metadata.Name+"="+strings.TrimPrefix(c.State.String(), "CONTAINER_"))
		}
		slices.Sort(names)
		return names
	}
	running := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	exited := &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_EXITED}
	checkList := func(t *testing.T) {
		for _, c := range []struct {
			name   string
			filter *runtimeapi.ContainerFilter
			want   []string
		}{
			{"none", nil, []string{"job-fails=EXITED", "job-ok=EXITED", "stubborn=RUNNING", "svc=RUNNING"}},
			{"id", &runtimeapi.ContainerFilter{Id: svc}, []string{"svc=RUNNING"}},
			{"id prefix", &runtimeapi.ContainerFilter{Id: stubborn[:12]}, []string{"stubborn=RUNNING"}},
			{"running", &runtimeapi.ContainerFilter{State: running}, []string{"stubborn=RUNNING", "svc=RUNNING"}},
			{"exited", &runtimeapi.ContainerFilter{State: exited}, []string{"job-fails=EXITED", "job-ok=EXITED"}},
			{"pod", &runtimeapi.ContainerFilter{PodSandboxId: pod}, []string{"job-fails=EXITED", "job-ok=EXITED", "stubborn=RUNNING", "svc=RUNNING"}},
			{"other pod", &runtimeapi.ContainerFilter{PodSandboxId: strings.Repeat("0", 64)}, nil},
			{"label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"app": "svc"}}, []string{"svc=RUNNING"}},
			{"pod and label", &runtimeapi.ContainerFilter{PodSandboxId: pod, LabelSelector: map[string]string{"app": "job-ok"}}, []string{"job-ok=EXITED"}},
		} {
			if got := list(t, c.filter); !slices.Equal(got, c.want) {
				t.Errorf("filter %s: %v, want %v", c.name, got, c.want)
			}
		}
	}
	t.Run("list", checkList)

	// keel-cri killed: keeld restarts it, and it finds the containers
	// and their states in keeld.
	if err := syscall.Kill(k.waitCRI(0), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	k.waitCRI(1)
	t.Run("list after keel-cri's restart", checkList)

	// Stop: SIGTERM ends svc at once; stubborn ignores it and is killed
	// once its timeout has passed. Stopping again, or an unknown id, is
	// no error.
	stop := func(id string, timeout int64) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
			t.Fatalf("stop %s: %v", id, err)
		}
		return time.Since(start)
	}
	stop(svc, 60)
	if st := waitExited(t, rs, svc); st.ExitCode != 128+int32(syscall.SIGTERM) {
		t.Errorf("svc stopped: %v, want exit %d", st, 128+int32(syscall.SIGTERM))
	}
	if d := stop(stubborn, 2); d < 2*time.Second {
		t.Errorf("stubborn stopped after %v, before its 2s timeout", d)
	}
	if st := waitExited(t, rs, stubborn); st.ExitCode != 128+int32(syscall.SIGKILL) {
		t.Errorf("stubborn stopped: %v, want exit %d", st, 128+int32(syscall.SIGKILL))
	}
	stop(svc, 0)
	stop(strings.Repeat("f", 64), 0)

	// Remove: gone; again, and an unknown id, are no error.
	for _, id := range []string{svc, svc, strings.Repeat("f", 64)} {
		if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(t, &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"app": "svc"}}); got != nil {
		t.Errorf("svc listed after remove: %v", got)
	}
	if _, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: svc}); err == nil {
		t.Error("status of a removed container answers")
	}
	// Attach to a shell with stdin_once: what the attach sends runs, and
	// its end is the shell's EOF, so the shell exits and the attach ends.
	onceCfg := boxConfig(ref, "once", "")
	onceCfg.Command, onceCfg.Args, onceCfg.Stdin, onceCfg.StdinOnce = []string{"sh"}, nil, true, true
	once := criContainer(t, rs, pod, podCfg, onceCfg)
	att, err := rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: once, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut syncBuffer
	if err := stream(t, att.Url, remotecommand.StreamOptions{Stdin: strings.NewReader("echo hello\n"), Stdout: &out, Stderr: &errOut}); err != nil {
		t.Errorf("attach: %v", err)
	}
	if out.String() != "hello\n" || errOut.String() != "" {
		t.Errorf("attach: stdout %q, stderr %q; want hello", out.String(), errOut.String())
	}
	if st := waitExited(t, rs, once); st.ExitCode != 0 {
		t.Errorf("the attached shell: %v, want exit 0", st)
	}

	// The pod's removal takes the rest.
	if _, err := rs.RemovePodSandbox(context.WithoutCancel(ctx), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if out := k.ok("-n", "k8s.io", "container", "ls", "-q"); out != "" {
		t.Errorf("keel containers left after the pod's removal: %q", out)
	}
}

// TestCrictlContainers: crictl runp, create, start, ps, inspect, exec,
// logs, stop and rm, as an operator runs them.
func TestCrictlContainers(t *testing.T) {
	t.Parallel()
	k := startCRIPodKeeld(t)
	crictl(t) // skip before anything else when it cannot be built
	dir := k.env.dir
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := k.reg.Host + "/e2e/busybox:v1"
	k.crictl(t, "pull", ref)
	pod, ctr := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	logs := t.TempDir()
	for file, body := range map[string]string{
		pod: fmt.Sprintf(`{"metadata": {"name": "web", "namespace": "default", "attempt": 1, "uid": "web-uid"},
			"hostname": "web", "log_directory": %q, "linux": {}}`, logs),
		ctr: fmt.Sprintf(`{"metadata": {"name": "echo"}, "image": {"image": %q},
			"command": ["sh", "-c", "trap 'exit 0' TERM; echo one; echo two >&2; while :; do if [ -f /say ]; then cat /say; rm /say; fi; sleep 0.1; done"],
			"labels": {"app": "echo"}, "log_path": "echo.log",
			"linux": {"security_context": {"run_as_user": {"value": 0}}}}`, ref),
	} {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	podID := strings.TrimSpace(k.crictl(t, "runp", pod))
	id := strings.TrimSpace(k.crictl(t, "create", podID, ctr, pod))
	if len(id) != 64 {
		t.Fatalf("crictl create printed %q, want a container id", id)
	}
	if out := k.crictl(t, "ps", "-a", "-q"); strings.TrimSpace(out) != id {
		t.Errorf("crictl ps -a -q after create: %q", out)
	}
	if out := k.crictl(t, "start", id); strings.TrimSpace(out) != id {
		t.Errorf("crictl start: %q", out)
	}
	if out := k.crictl(t, "ps"); !strings.Contains(out, id[:13]) || !strings.Contains(out, "echo") || !strings.Contains(out, "Running") {
		t.Errorf("crictl ps:\n%s", out)
	}
	if out := k.crictl(t, "ps", "-q", "--label", "app=echo", "--pod", podID); strings.TrimSpace(out) != id {
		t.Errorf("crictl ps -q --label app=echo --pod: %q", out)
	}
	var inspect struct {
		Status struct {
			State   string `json:"state"`
			LogPath string `json:"logPath"`
		} `json:"status"`
	}
	decode(t, k.crictl(t, "inspect", id), &inspect)
	if inspect.Status.State != "CONTAINER_RUNNING" || inspect.Status.LogPath != filepath.Join(logs, "echo.log") {
		t.Errorf("crictl inspect: %+v", inspect.Status)
	}
	if out := k.crictl(t, "exec", id, "sh", "-c", "hostname"); strings.TrimSpace(out) != "web" {
		t.Errorf("crictl exec hostname: %q", out)
	}
	// crictl logs reads log_path itself: stdout to its stdout, stderr to
	// its stderr.
	eventually(t, settle, "both lines in crictl logs", func() error {
		cmd, cancel := k.crictlCmd(t, "logs", id)
		defer cancel()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "one\n") || !strings.Contains(string(out), "two\n") {
			return fmt.Errorf("crictl logs: %v: %q", err, out)
		}
		return nil
	})
	// crictl logs -f follows what the container writes after it started,
	// and ends once the container has stopped.
	follow, cancelFollow := k.crictlCmd(t, "logs", "-f", id)
	defer cancelFollow()
	followed := &syncBuffer{}
	follow.Stdout, follow.Stderr = followed, followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- follow.Wait() }()
	eventually(t, settle, "crictl logs -f shows the lines so far", func() error {
		if !strings.Contains(followed.String(), "one\n") {
			return fmt.Errorf("crictl logs -f: %q", followed.String())
		}
		return nil
	})
	k.crictl(t, "exec", id, "sh", "-c", "echo three > /say.new && mv /say.new /say")
	eventually(t, settle, "crictl logs -f follows a new line", func() error {
		if !strings.Contains(followed.String(), "three\n") {
			return fmt.Errorf("crictl logs -f: %q", followed.String())
		}
		return nil
	})
	if out := k.crictl(t, "stop", "--timeout", "5", id); strings.TrimSpace(out) != id {
		t.Errorf("crictl stop: %q", out)
	}
	select {
	case err := <-followDone:
		if err != nil {
			t.Errorf("crictl logs -f after the stop: %v; output %q", err, followed.String())
		}
	case <-time.After(settle):
		t.Errorf("crictl logs -f still follows %s after it stopped", settle)
	}
	decode(t, k.crictl(t, "inspect", id), &inspect)
	if inspect.Status.State != "CONTAINER_EXITED" {
		t.Errorf("crictl inspect after stop: %+v", inspect.Status)
	}
	if out := k.crictl(t, "rm", id); strings.TrimSpace(out) != id {
		t.Errorf("crictl rm: %q", out)
	}
	if out := k.crictl(t, "ps", "-a", "-q"); out != "" {
		t.Errorf("crictl ps -a -q after rm: %q", out)
	}
	k.crictl(t, "rmp", "-f", podID)
}
