package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// A pod sandbox is a keel container of the CRI's namespace labelled
// LabelKind=sandbox, running the pause image; its task holds the pod's
// namespaces, and keeld's network attachment of that task is the pod's
// network. Everything the CRI reports of a pod is read from keeld.

// sandboxImage is the pause image, in keeld: made from keel-pause when
// the server has its path, else pulled when missing.
func (s *Server) sandboxImage(ctx context.Context) (client.Image, error) {
	if s.cfg.PausePath != "" {
		return EnsurePauseImage(ctx, s.c, s.cfg.SandboxImage, s.cfg.PausePath)
	}
	img, err := s.c.GetImage(ctx, s.cfg.SandboxImage)
	if errdefs.IsNotFound(err) {
		s.logger.Info("pulling the sandbox image", "ref", s.cfg.SandboxImage)
		img, err = s.c.Pull(ctx, s.cfg.SandboxImage, client.WithPullUnpack)
	}
	if err != nil {
		return client.Image{}, fmt.Errorf("sandbox image %s: %w", s.cfg.SandboxImage, err)
	}
	return img, nil
}

func newSandboxID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *runtimeService) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := validateSandboxConfig(cfg); err != nil {
		return nil, err
	}
	md := cfg.GetMetadata()
	existing, err := r.sandboxes(ctx)
	if err != nil {
		return nil, err
	}
	for _, ct := range existing {
		l := ct.Info().Labels
		if l[LabelPodName] == md.GetName() && l[LabelPodNamespace] == md.GetNamespace() && l[LabelPodUID] == md.GetUid() &&
			l[LabelPodAttempt] == strconv.FormatUint(uint64(md.GetAttempt()), 10) {
			return nil, fmt.Errorf("pod %s/%s (uid %s, attempt %d) is sandbox %s already: %w",
				md.GetNamespace(), md.GetName(), md.GetUid(), md.GetAttempt(), ct.ID(), errdefs.ErrAlreadyExists)
		}
	}
	id := newSandboxID()
	specOpts, err := sandboxSpecOpts(id, cfg)
	if err != nil {
		return nil, err
	}
	network, err := r.s.podNetwork(ctx)
	if err != nil {
		return nil, err
	}
	netOpts, err := sandboxNetworkOpts(cfg, network)
	if err != nil {
		return nil, err
	}
	img, err := r.s.sandboxImage(ctx)
	if err != nil {
		return nil, err
	}
	opts := []client.NewContainerOpt{
		client.WithImage(img), client.WithNewSnapshot(id, img), client.WithNewSpec(specOpts...),
		client.WithContainerLabels(sandboxLabels(cfg, req.GetRuntimeHandler())),
	}
	if h := req.GetRuntimeHandler(); h != "" {
		opts = append(opts, client.WithRuntime(h, nil))
	}
	ct, err := r.s.c.NewContainer(ctx, id, append(opts, netOpts...)...)
	if err != nil {
		return nil, err
	}
	// A pod that does not run is not left behind.
	cleanup := func() {
		ctx := context.WithoutCancel(ctx)
		if t, err := ct.Task(ctx); err == nil {
			r.stopTask(ctx, t)
		}
		ct.Delete(ctx, client.WithForce)
	}
	t, err := ct.NewTask(ctx, nil)
	if err != nil {
		cleanup()
		return nil, err
	}
	if err := t.Start(ctx); err != nil {
		cleanup()
		return nil, err
	}
	r.s.logger.Info("pod sandbox running", "id", id, "pod", md.GetNamespace()+"/"+md.GetName(), "pid", t.Pid())
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// sandboxes are the pod sandboxes in keeld.
func (r *runtimeService) sandboxes(ctx context.Context) ([]*client.Container, error) {
	return r.s.c.Containers(ctx, sandboxFilter)
}

// findSandbox is the sandbox of id, or of the one id it is a prefix of.
// NotFound when none.
func (r *runtimeService) findSandbox(ctx context.Context, id string) (*client.Container, error) {
	all, err := r.sandboxes(ctx)
	if err != nil {
		return nil, err
	}
	return findByID(all, id, "pod sandbox")
}

// stopTask ends a task and deletes it, which releases its network;
// a task already gone is no error.
func (r *runtimeService) stopTask(ctx context.Context, t *client.Task) error {
	st, err := t.Status(ctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status != runtime.StatusStopped {
		waitCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		exited, err := t.Wait(waitCtx)
		if err != nil {
			return err
		}
		if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		select {
		case e := <-exited:
			if e.Err != nil && !errdefs.IsNotFound(e.Err) {
				return e.Err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := t.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// podContainers are the keel containers of pod id (not its sandbox).
func (r *runtimeService) podContainers(ctx context.Context, id string) ([]*client.Container, error) {
	return r.s.c.Containers(ctx, `labels."`+LabelSandboxID+`"==`+id)
}

// StopPodSandbox ends the pod's containers' tasks and the pause task,
// releasing the pod's network; a stopped pod stops again without error.
func (r *runtimeService) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	ct, err := r.findSandbox(ctx, req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		// Gone already: stopped, as newer CRI expects.
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := r.stopPod(ctx, ct); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (r *runtimeService) stopPod(ctx context.Context, sb *client.Container) error {
	members, err := r.podContainers(ctx, sb.ID())
	if err != nil {
		return err
	}
	// The containers' stopped tasks stay, with their exit status, until
	// they are removed.
	for _, ct := range members {
		if err := r.stopContainer(ctx, ct, 0); err != nil {
			return fmt.Errorf("stop %s: %w", ct.ID(), err)
		}
	}
	t, err := sb.Task(ctx)
	if errdefs.IsNotFound(err) {
		err = nil
	} else if err == nil {
		err = r.stopTask(ctx, t)
	}
	if err != nil {
		return fmt.Errorf("stop %s: %w", sb.ID(), err)
	}
	r.s.logger.Info("pod sandbox stopped", "id", sb.ID())
	return nil
}

// RemovePodSandbox stops the pod and removes it and its containers; a pod
// that is not there is no error (it was removed already).
func (r *runtimeService) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := r.findSandbox(ctx, req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := r.stopPod(ctx, sb); err != nil {
		return nil, err
	}
	members, err := r.podContainers(ctx, sb.ID())
	if err != nil {
		return nil, err
	}
	for _, ct := range append(members, sb) {
		if err := ct.Delete(ctx, client.WithForce); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("remove %s: %w", ct.ID(), err)
		}
		if err := r.removeImageVolumes(ctx, ct.ID()); err != nil {
			return nil, err
		}
	}
	r.s.logger.Info("pod sandbox removed", "id", sb.ID())
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// taskStates are the namespace's tasks by container id.
func (r *runtimeService) taskStates(ctx context.Context) (map[string]client.TaskInfo, error) {
	tasks, err := r.s.c.Tasks(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]client.TaskInfo{}
	for _, t := range tasks {
		if t.ExecID == "" {
			out[t.ID] = t
		}
	}
	return out, nil
}

// sandboxState: READY while the pause task runs.
func sandboxState(t client.TaskInfo, ok bool) runtimeapi.PodSandboxState {
	if ok && t.Status == runtime.StatusRunning {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func sandboxMetadata(l map[string]string) *runtimeapi.PodSandboxMetadata {
	attempt, _ := strconv.ParseUint(l[LabelPodAttempt], 10, 32)
	return &runtimeapi.PodSandboxMetadata{Name: l[LabelPodName], Namespace: l[LabelPodNamespace], Uid: l[LabelPodUID], Attempt: uint32(attempt)}
}

func toPodSandbox(ct *client.Container, state runtimeapi.PodSandboxState) *runtimeapi.PodSandbox {
	info := ct.Info()
	return &runtimeapi.PodSandbox{
		Id: info.ID, Metadata: sandboxMetadata(info.Labels), State: state, CreatedAt: info.CreatedAt.UnixNano(),
		Labels: prefixed(info.Labels, PrefixLabel), Annotations: prefixed(info.Labels, PrefixAnnotation),
		RuntimeHandler: info.Labels[LabelRuntimeHandler],
	}
}

func (r *runtimeService) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	all, err := r.sandboxes(ctx)
	if err != nil {
		return nil, err
	}
	tasks, err := r.taskStates(ctx)
	if err != nil {
		return nil, err
	}
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, ct := range all {
		t, ok := tasks[ct.ID()]
		sb := toPodSandbox(ct, sandboxState(t, ok))
		if matchSandbox(sb, f) {
			resp.Items = append(resp.Items, sb)
		}
	}
	return resp, nil
}

// matchSandbox: the filter's id (or a prefix of it, as containerd takes
// it), state and every label of its selector.
func matchSandbox(sb *runtimeapi.PodSandbox, f *runtimeapi.PodSandboxFilter) bool {
	if f == nil {
		return true
	}
	if f.Id != "" && !strings.HasPrefix(sb.Id, f.Id) {
		return false
	}
	if f.State != nil && f.State.State != sb.State {
		return false
	}
	return matchLabels(sb.Labels, f.LabelSelector)
}

// namespaceMode: POD when the spec makes a namespace of type t, NODE when
// it shares the host's.
func namespaceMode(s *specs.Spec, t specs.LinuxNamespaceType) runtimeapi.NamespaceMode {
	if s != nil && s.Linux != nil && slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t && n.Path == "" }) {
		return runtimeapi.NamespaceMode_POD
	}
	return runtimeapi.NamespaceMode_NODE
}

func (r *runtimeService) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	ct, err := r.findSandbox(ctx, req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	info := ct.Info()
	t, terr := r.s.c.Tasks(ctx)
	if terr != nil {
		return nil, terr
	}
	var task client.TaskInfo
	i := slices.IndexFunc(t, func(t client.TaskInfo) bool { return t.ID == info.ID && t.ExecID == "" })
	if i >= 0 {
		task = t[i]
	}
	sb := toPodSandbox(ct, sandboxState(task, i >= 0))
	st := &runtimeapi.PodSandboxStatus{
		Id: sb.Id, Metadata: sb.Metadata, State: sb.State, CreatedAt: sb.CreatedAt,
		Labels: sb.Labels, Annotations: sb.Annotations, RuntimeHandler: sb.RuntimeHandler,
		Network: &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network: namespaceMode(info.Spec, specs.NetworkNamespace),
			Pid:     namespaceMode(info.Spec, specs.PIDNamespace),
			Ipc:     namespaceMode(info.Spec, specs.IPCNamespace),
		}}},
	}
	if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY && info.Network != nil && info.Network.Mode == client.NetworkCNI {
		ips, err := r.podIPs(ctx, info)
		if err != nil {
			return nil, err
		}
		if len(ips) > 0 {
			st.Network.Ip = ips[0]
			for _, ip := range ips[1:] {
				st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
			}
		}
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		b, err := json.Marshal(map[string]any{
			"pid": task.Pid, "image": info.Image, "snapshotter": info.Snapshotter, "snapshotKey": info.SnapshotKey,
			"runtime": info.Runtime, "keelLabels": maps.Clone(info.Labels),
		})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// podIPs are the addresses (without prefix length) of pod info's task on
// the network it is attached to.
func (r *runtimeService) podIPs(ctx context.Context, info client.ContainerInfo) ([]string, error) {
	n, err := r.s.networkOf(ctx, info)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, e := range n.Endpoints {
		if e.Namespace == r.s.cfg.Namespace && e.ContainerID == info.ID {
			for _, ip := range e.IPs {
				addr, _, _ := strings.Cut(ip, "/")
				ips = append(ips, addr)
			}
		}
	}
	return ips, nil
}
