package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// A pod's container is a keel container of the CRI's namespace labelled
// LabelKind=container and LabelSandboxID=<pod>; its task joins the pause
// task's namespaces. Its state is its task's: a stopped task is kept (so
// its exit code and time stay in keeld) until RemoveContainer or
// RemovePodSandbox deletes it.

// containerFilter selects the pods' containers among keel containers.
var containerFilter = `labels."` + LabelKind + `"==` + KindContainer

func (r *runtimeService) containers(ctx context.Context) ([]*client.Container, error) {
	return r.s.c.Containers(ctx, containerFilter)
}

// findContainer is the container of id, or of the one id is a prefix of.
func (r *runtimeService) findContainer(ctx context.Context, id string) (*client.Container, error) {
	all, err := r.containers(ctx)
	if err != nil {
		return nil, err
	}
	return findByID(all, id, "container")
}

// findByID is the one of all whose id is id or starts with it; NotFound
// for none, InvalidArgument for an empty or ambiguous id.
func findByID(all []*client.Container, id, what string) (*client.Container, error) {
	if id == "" {
		return nil, fmt.Errorf("%s id is empty: %w", what, errdefs.ErrInvalidArgument)
	}
	var found []*client.Container
	for _, ct := range all {
		if ct.ID() == id {
			return ct, nil
		}
		if strings.HasPrefix(ct.ID(), id) {
			found = append(found, ct)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s %q: %w", what, id, errdefs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%s id %q is the prefix of %d of them: %w", what, id, len(found), errdefs.ErrInvalidArgument)
}

func (r *runtimeService) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	md := cfg.GetMetadata()
	if md.GetName() == "" {
		return nil, fmt.Errorf("container metadata needs a name: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := r.findSandbox(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sbTask, err := sb.Task(ctx)
	if err != nil {
		return nil, fmt.Errorf("pod sandbox %s has no task: %w", sb.ID(), errdefs.ErrFailedPrecondition)
	}
	if st, err := sbTask.Status(ctx); err != nil {
		return nil, err
	} else if st.Status != runtime.StatusRunning {
		return nil, fmt.Errorf("pod sandbox %s is not ready (%s): %w", sb.ID(), st.Status, errdefs.ErrFailedPrecondition)
	}
	members, err := r.podContainers(ctx, sb.ID())
	if err != nil {
		return nil, err
	}
	attempt := strconv.FormatUint(uint64(md.GetAttempt()), 10)
	for _, ct := range members {
		if l := ct.Info().Labels; l[LabelContainerName] == md.GetName() && l[LabelContainerAttempt] == attempt {
			return nil, fmt.Errorf("container %s (attempt %s) of pod %s is %s already: %w", md.GetName(), attempt, sb.ID(), ct.ID(), errdefs.ErrAlreadyExists)
		}
	}
	imgRef := cfg.GetImage().GetImage()
	img, ok, err := r.s.images.find(ctx, imgRef)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("image %q: %w", imgRef, errdefs.ErrNotFound)
	}
	rec := img.records[0]
	id := newSandboxID()
	specOpts, err := r.containerSpecOpts(ctx, id, sb, sbTask.Pid(), rec, cfg)
	if err != nil {
		return nil, err
	}
	var logPath string
	if dir := sb.Info().Labels[LabelLogDirectory]; dir != "" && cfg.GetLogPath() != "" {
		logPath = filepath.Join(dir, cfg.GetLogPath())
	}
	labels := containerLabels(sb.ID(), imgRef, logPath, cfg)
	if len(cfg.GetMounts()) > 0 {
		b, err := json.Marshal(cfg.GetMounts())
		if err != nil {
			return nil, err
		}
		labels[LabelMounts] = string(b)
	}
	if cfg.GetStdin() {
		labels[LabelStdin] = "true"
		if cfg.GetStdinOnce() {
			labels[LabelStdinOnce] = "true"
		}
	}
	opts := []client.NewContainerOpt{
		client.WithImage(rec), client.WithNewSnapshot(id, rec), client.WithNewSpec(specOpts...),
		client.WithContainerLabels(labels),
	}
	if namespaceMode(sb.Info().Spec, specs.NetworkNamespace) == runtimeapi.NamespaceMode_NODE {
		opts = append(opts, client.WithHostNetwork())
	} else {
		opts = append(opts, client.WithContainerNetwork(sb.ID()))
	}
	if h := sb.Info().Labels[LabelRuntimeHandler]; h != "" {
		opts = append(opts, client.WithRuntime(h, nil))
	}
	if _, err := r.s.c.NewContainer(ctx, id, opts...); err != nil {
		if rerr := r.removeImageVolumes(context.WithoutCancel(ctx), id); rerr != nil {
			r.s.logger.Warn("container not created: its image volumes stay", "id", id, "error", rerr)
		}
		return nil, err
	}
	r.s.logger.Info("container created", "id", id, "pod", sb.ID(), "name", md.GetName())
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// containerSpecOpts build the container's spec: the image's config, then
// the CRI config's command, env, working dir and terminal, the pod's
// namespaces, hostname and cgroup, mounts, devices, security context and
// resources.
func (r *runtimeService) containerSpecOpts(ctx context.Context, id string, sb *client.Container, pid uint32, img client.Image, cfg *runtimeapi.ContainerConfig) ([]oci.SpecOpt, error) {
	li := r.s.c.LocalImage(img)
	imgCfg, err := li.Config(ctx)
	if err != nil {
		return nil, err
	}
	args, err := processArgs(cfg.GetCommand(), cfg.GetArgs(), imgCfg.Config.Entrypoint, imgCfg.Config.Cmd)
	if err != nil {
		return nil, err
	}
	sbSpec := sb.Info().Spec
	opts := []oci.SpecOpt{oci.WithImageConfig(li), oci.WithProcessArgs(args...)}
	if h := sbSpec.Hostname; h != "" {
		opts = append(opts, oci.WithEnv("HOSTNAME="+h))
	}
	for _, kv := range cfg.GetEnvs() {
		opts = append(opts, oci.WithEnv(kv.GetKey()+"="+string(kv.GetValue())))
	}
	if wd := cfg.GetWorkingDir(); wd != "" {
		opts = append(opts, oci.WithCwd(wd))
	}
	if cfg.GetTty() {
		opts = append(opts, oci.WithTTY)
	}
	lx := cfg.GetLinux()
	sc := lx.GetSecurityContext()
	var targetPid uint32
	if nsOpts := sc.GetNamespaceOptions(); nsOpts.GetPid() == runtimeapi.NamespaceMode_TARGET {
		target, err := r.findContainer(ctx, nsOpts.GetTargetId())
		if err != nil {
			return nil, fmt.Errorf("PID namespace target: %w", err)
		}
		t, err := target.Task(ctx)
		if err != nil {
			return nil, fmt.Errorf("PID namespace target %s: %w", target.ID(), err)
		}
		targetPid = t.Pid()
	}
	opts = append(opts, podNamespaces(sbSpec, pid, sc.GetNamespaceOptions().GetPid(), targetPid)...)
	if p := sbSpec.Linux.CgroupsPath; p != "" {
		opts = append(opts, withCgroupsPath(filepath.Join(filepath.Dir(p), id)))
	}
	// Before the image volumes' directories are made.
	if err := r.s.checkRecursiveReadOnly(ctx, sb.Info().Labels[LabelRuntimeHandler], cfg.GetMounts()); err != nil {
		return nil, err
	}
	if vols := imageVolumes(imgCfg.Config.Volumes, cfg.GetMounts()); len(vols) > 0 {
		dir, err := r.s.volumesDir(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, withImageVolumes(filepath.Join(dir, id), vols))
	}
	mounts, err := withCRIMounts(cfg.GetMounts())
	if err != nil {
		return nil, err
	}
	opts = append(opts, mounts)
	if len(cfg.GetDevices()) > 0 {
		opts = append(opts, oci.WithDevices(criDevices(cfg.GetDevices())...))
	}
	sec, err := securityOpts(sc)
	if err != nil {
		return nil, err
	}
	opts = append(opts, sec...)
	opts = append(opts, withResources(lx.GetResources()))
	sbLabels := sb.Info().Labels
	ann := map[string]string{
		annotationContainerType: containerTypeContainer,
		annotationSandboxID:     sb.ID(),
		annotationContainerName: cfg.GetMetadata().GetName(),
		annotationImageName:     cfg.GetImage().GetImage(),
		annotationSandboxName:   sbLabels[LabelPodName],
		annotationSandboxNS:     sbLabels[LabelPodNamespace],
		annotationSandboxUID:    sbLabels[LabelPodUID],
	}
	for k, v := range cfg.GetAnnotations() {
		ann[k] = v
	}
	return append(opts, oci.WithAnnotations(ann)), nil
}

func (r *runtimeService) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if _, err := ct.Task(ctx); err == nil {
		return nil, fmt.Errorf("container %s was started already: %w", ct.ID(), errdefs.ErrFailedPrecondition)
	} else if !errdefs.IsNotFound(err) {
		return nil, err
	}
	l := ct.Info().Labels
	if l[LabelStartedAt] != "" {
		return nil, fmt.Errorf("container %s has run already: %w", ct.ID(), errdefs.ErrFailedPrecondition)
	}
	logPath := l[LabelLogPath]
	if logPath != "" {
		// The kubelet makes the pod's log directory; the container's own
		// subdirectories (name/attempt.log) are made here.
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, fmt.Errorf("container %s: log directory: %w", ct.ID(), err)
		}
	}
	creator := cio.ContainerLog(cio.Log{Path: logPath})
	if l[LabelStdin] == "true" {
		creator = cio.KeepStdin(creator)
	}
	t, err := ct.NewTask(ctx, creator)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	// Read while the created process waits for its start in its cgroup:
	// after the start it may be gone already (an OOM kill is quick).
	if dir, err := memoryCgroup(t.Pid()); err == nil {
		labels[LabelMemoryCgroup] = dir
	} else {
		r.s.logger.Warn("container's memory cgroup not found: an OOM kill will not be told", "id", ct.ID(), "error", err)
	}
	// Taken before the start, so it is never after the exit.
	started := time.Now()
	if err := t.Start(ctx); err != nil {
		bg := context.WithoutCancel(ctx)
		t.Kill(bg, syscall.SIGKILL, client.WithKillAll)
		t.Delete(bg)
		return nil, err
	}
	labels[LabelStartedAt] = strconv.FormatInt(started.UnixNano(), 10)
	if _, err := ct.SetLabels(ctx, labels); err != nil {
		return nil, err
	}
	r.s.logger.Info("container started", "id", ct.ID(), "pid", t.Pid())
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer sends SIGTERM, then SIGKILL after the timeout (at once
// for none); the stopped task is kept for its exit status. A container
// that is not there or not running is no error.
func (r *runtimeService) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := r.stopContainer(ctx, ct, time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// stopContainer ends ct's task, gracefully within timeout, and waits for
// its exit.
func (r *runtimeService) stopContainer(ctx context.Context, ct *client.Container, timeout time.Duration) error {
	t, err := ct.Task(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := t.Status(ctx)
	if errdefs.IsNotFound(err) || err == nil && st.Status == runtime.StatusStopped {
		return nil
	}
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited, err := t.Wait(waitCtx)
	if err != nil {
		return err
	}
	ignore := func(err error) error {
		if errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
			return nil
		}
		return err
	}
	if timeout > 0 && st.Status == runtime.StatusRunning {
		if err := ignore(t.Kill(ctx, syscall.SIGTERM)); err != nil {
			return err
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-exited:
			return nil
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ignore(t.Kill(ctx, syscall.SIGKILL, client.WithKillAll)); err != nil {
		return err
	}
	select {
	case e := <-exited:
		if e.Err != nil && !errdefs.IsNotFound(e.Err) {
			return e.Err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RemoveContainer stops the container at once and removes it (its log
// stays: the kubelet removes it with the pod's log directory); one that
// is not there is no error.
func (r *runtimeService) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := r.stopContainer(ctx, ct, 0); err != nil {
		return nil, err
	}
	if t, err := ct.Task(ctx); err == nil {
		if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return nil, err
		}
	}
	if err := ct.Delete(ctx, client.WithForce); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	if err := r.removeImageVolumes(ctx, ct.ID()); err != nil {
		return nil, err
	}
	r.s.logger.Info("container removed", "id", ct.ID())
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// containerState is the CRI state of a container with task t (ok false
// for none).
func containerState(info client.ContainerInfo, t client.TaskInfo, ok bool) runtimeapi.ContainerState {
	if !ok {
		if info.Labels[LabelStartedAt] != "" {
			return runtimeapi.ContainerState_CONTAINER_EXITED
		}
		return runtimeapi.ContainerState_CONTAINER_CREATED
	}
	switch t.Status {
	case runtime.StatusCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case runtime.StatusRunning, runtime.StatusPaused, runtime.StatusPausing:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case runtime.StatusStopped:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func containerMetadata(l map[string]string) *runtimeapi.ContainerMetadata {
	attempt, _ := strconv.ParseUint(l[LabelContainerAttempt], 10, 32)
	return &runtimeapi.ContainerMetadata{Name: l[LabelContainerName], Attempt: uint32(attempt)}
}

// toContainer is ct as ListContainers reports it; imageID is its image's
// id ("" when the image is gone).
func toContainer(ct *client.Container, state runtimeapi.ContainerState, imageID, imageRef string) *runtimeapi.Container {
	info := ct.Info()
	return &runtimeapi.Container{
		Id: info.ID, PodSandboxId: info.Labels[LabelSandboxID], Metadata: containerMetadata(info.Labels),
		Image: &runtimeapi.ImageSpec{Image: info.Labels[LabelImageRef]}, ImageRef: imageRef, ImageId: imageID,
		State: state, CreatedAt: info.CreatedAt.UnixNano(),
		Labels: prefixed(info.Labels, PrefixLabel), Annotations: prefixed(info.Labels, PrefixAnnotation),
	}
}

// imageIDs map each keel image record name to its CRI image id and ref
// (a repo digest when there is one, else the id).
func (r *runtimeService) imageIDs(ctx context.Context) (map[string][2]string, error) {
	images, err := r.s.images.images(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][2]string{}
	for _, img := range images {
		c := img.toCRI()
		ref := c.Id
		if len(c.RepoDigests) > 0 {
			ref = c.RepoDigests[0]
		}
		for _, rec := range img.records {
			out[rec.Name] = [2]string{c.Id, ref}
		}
	}
	return out, nil
}

func (r *runtimeService) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	all, err := r.containers(ctx)
	if err != nil {
		return nil, err
	}
	tasks, err := r.taskStates(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := r.imageIDs(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	for _, ct := range all {
		t, ok := tasks[ct.ID()]
		id := ids[ct.Info().Image]
		c := toContainer(ct, containerState(ct.Info(), t, ok), id[0], id[1])
		if matchContainer(c, f) {
			resp.Containers = append(resp.Containers, c)
		}
	}
	return resp, nil
}

// matchContainer: the filter's id and pod sandbox id (or prefixes of
// them, as containerd takes them), state and every label of its
// selector.
func matchContainer(c *runtimeapi.Container, f *runtimeapi.ContainerFilter) bool {
	if f == nil {
		return true
	}
	if !strings.HasPrefix(c.Id, f.Id) || !strings.HasPrefix(c.PodSandboxId, f.PodSandboxId) {
		return false
	}
	if f.State != nil && f.State.State != c.State {
		return false
	}
	return matchLabels(c.Labels, f.LabelSelector)
}

func (r *runtimeService) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	info := ct.Info()
	var task client.TaskInfo
	t, err := ct.Task(ctx)
	ok := err == nil
	if ok {
		if task, err = t.Status(ctx); err != nil {
			ok = false
		}
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	ids, err := r.imageIDs(ctx)
	if err != nil {
		return nil, err
	}
	id := ids[info.Image]
	c := toContainer(ct, containerState(info, task, ok), id[0], id[1])
	st := &runtimeapi.ContainerStatus{
		Id: c.Id, Metadata: c.Metadata, State: c.State, CreatedAt: c.CreatedAt,
		Image: c.Image, ImageRef: c.ImageRef, ImageId: c.ImageId,
		Labels: c.Labels, Annotations: c.Annotations, LogPath: info.Labels[LabelLogPath],
	}
	if v, err := strconv.ParseInt(info.Labels[LabelStartedAt], 10, 64); err == nil {
		st.StartedAt = v
	}
	if c.State == runtimeapi.ContainerState_CONTAINER_EXITED {
		st.Reason = "Completed"
		if ok {
			st.ExitCode = int32(task.ExitStatus)
			if !task.ExitedAt.IsZero() {
				st.FinishedAt = task.ExitedAt.UnixNano()
			}
		} else {
			// The task was deleted (its pod stopped): its exit status went with it.
			st.ExitCode, st.Reason, st.Message = 255, "Unknown", "the container's task is gone"
		}
		if st.ExitCode != 0 && st.Reason == "Completed" {
			st.Reason = "Error"
		}
		if st.ExitCode == 137 && oomKilled(info) {
			st.Reason = "OOMKilled"
		}
	}
	if p := info.Spec.Process; p != nil {
		// The identity the container's process was given, as the spec
		// has it (the image's user and groups resolved at create).
		st.User = &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(p.User.UID), Gid: int64(p.User.GID)}}
		for _, g := range p.User.AdditionalGids {
			st.User.Linux.SupplementalGroups = append(st.User.Linux.SupplementalGroups, int64(g))
		}
	}
	if m := info.Labels[LabelMounts]; m != "" {
		if err := json.Unmarshal([]byte(m), &st.Mounts); err != nil {
			return nil, fmt.Errorf("container %s: mounts label: %w", ct.ID(), err)
		}
	}
	if res := info.Spec.Linux.Resources; res != nil {
		st.Resources = criResources(res, info.Spec.Process.OOMScoreAdj)
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		b, err := json.Marshal(map[string]any{
			"pid": task.Pid, "sandboxID": info.Labels[LabelSandboxID], "image": info.Image,
			"snapshotter": info.Snapshotter, "snapshotKey": info.SnapshotKey, "runtimeSpec": info.Spec,
		})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// oomKilled: whether the kernel's OOM killer ended the container; read
// from its memory cgroup, which stays until its task is deleted:
// memory.events (v2) or memory.oom_control (v1), whose oom_kill counts.
// The cgroup is the one its process was in (LabelMemoryCgroup), else
// the one its spec names.
func oomKilled(info client.ContainerInfo) bool {
	dirs := []string{info.Labels[LabelMemoryCgroup]}
	if p := info.Spec.Linux.CgroupsPath; p != "" && dirs[0] == "" {
		dirs = []string{filepath.Join("/sys/fs/cgroup", p), filepath.Join("/sys/fs/cgroup/memory", p)}
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		for _, file := range []string{"memory.events", "memory.oom_control"} {
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
					return true
				}
			}
		}
	}
	return false
}

// memoryCgroup is the directory of the memory cgroup process pid is in:
// in the memory hierarchy on cgroup v1, the unified one on v2, wherever
// the runtime put it.
func memoryCgroup(pid uint32) (string, error) {
	paths, unified, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	if cgroups.Mode() == cgroups.Unified {
		return filepath.Join("/sys/fs/cgroup", unified), nil
	}
	if p, ok := paths["memory"]; ok {
		return filepath.Join("/sys/fs/cgroup/memory", p), nil
	}
	return "", fmt.Errorf("process %d is in no memory cgroup", pid)
}

func (r *runtimeService) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	res := linuxResources(req.GetLinux())
	if res == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	t, err := ct.Task(ctx)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %s has no task to update: %w", ct.ID(), errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	if err := t.Update(ctx, res); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog: the kubelet renamed the container's log away (its
// log rotation); the runtime's writer closes the file and opens log_path
// again (keeld's Tasks.ReopenLog, crilog.File.Reopen in the shim), so
// nothing written before or after is lost. As containerd: a container that
// is not running has no writer to reopen.
func (r *runtimeService) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	ct, err := r.findContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	t, err := ct.Task(ctx)
	running := false
	if err == nil {
		var st client.TaskInfo
		if st, err = t.Status(ctx); err == nil {
			running = st.Status == runtime.StatusRunning
		}
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	if !running {
		return nil, fmt.Errorf("container %s is not running: %w", ct.ID(), errdefs.ErrFailedPrecondition)
	}
	if err := t.ReopenLog(ctx); err != nil {
		return nil, fmt.Errorf("container %s: reopen its log: %w", ct.ID(), err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// criResources are the spec's resources as the CRI reports them.
func criResources(res *specs.LinuxResources, oomScoreAdj *int) *runtimeapi.ContainerResources {
	lx := &runtimeapi.LinuxContainerResources{}
	if c := res.CPU; c != nil {
		if c.Shares != nil {
			lx.CpuShares = int64(*c.Shares)
		}
		if c.Quota != nil {
			lx.CpuQuota = *c.Quota
		}
		if c.Period != nil {
			lx.CpuPeriod = int64(*c.Period)
		}
		lx.CpusetCpus, lx.CpusetMems = c.Cpus, c.Mems
	}
	if m := res.Memory; m != nil {
		if m.Limit != nil {
			lx.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			lx.MemorySwapLimitInBytes = *m.Swap
		}
	}
	for _, h := range res.HugepageLimits {
		lx.HugepageLimits = append(lx.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	lx.Unified = res.Unified
	if oomScoreAdj != nil {
		lx.OomScoreAdj = int64(*oomScoreAdj)
	}
	return &runtimeapi.ContainerResources{Linux: lx}
}
