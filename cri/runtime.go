package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/version"
)

const (
	// RuntimeName is what Version reports as the runtime.
	RuntimeName = "keel"
	// APIVersion is the CRI version served.
	APIVersion = "v1"
	// PodCIDRLabel is the label of the CRI's keel namespace that holds
	// the pod CIDR the kubelet sets with UpdateRuntimeConfig: keeld keeps
	// it, so a restarted keel-cri finds it again.
	PodCIDRLabel = "io.keel.cri/pod-cidr"
)

// runtimeService serves the CRI RuntimeService; the calls of later slices
// answer Unimplemented (the embedded stubs).
type runtimeService struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	s *Server
}

func (r *runtimeService) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		// The kubelet's own API version, as containerd answers.
		Version:           "0.1.0",
		RuntimeName:       RuntimeName,
		RuntimeVersion:    version.Version,
		RuntimeApiVersion: APIVersion,
	}, nil
}

// Status: RuntimeReady when keeld answers; NetworkReady when keeld's
// default network is there with every CNI plugin its conflist names.
func (r *runtimeService) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	runtimeCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	if _, err := r.s.c.Version(ctx); err != nil {
		runtimeCond.Status, runtimeCond.Reason = false, "KeeldUnreachable"
		runtimeCond.Message = fmt.Sprintf("keeld does not answer: %v", err)
	}
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if reason, msg := r.networkProblem(ctx); reason != "" {
		netCond.Status, netCond.Reason, netCond.Message = false, reason, msg
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeCond, netCond}},
		// The groups are resolved by keel-cri, for every runtime.
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	if runtimeCond.Status {
		handlers, err := r.s.runtimeHandlers(ctx)
		if err != nil {
			return nil, err
		}
		resp.RuntimeHandlers = handlers
	}
	if req.Verbose {
		cfg, err := json.Marshal(map[string]string{
			"namespace":     r.s.cfg.Namespace,
			"sandbox_image": r.s.cfg.SandboxImage,
		})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"config": string(cfg)}
	}
	return resp, nil
}

// networkProblem says why pods cannot get a network: keeld's default
// network missing, or CNI plugins of it not installed; "" when they can.
func (r *runtimeService) networkProblem(ctx context.Context) (reason, msg string) {
	nets, err := r.s.c.Networks().List(ctx)
	if err != nil {
		return "NetworkPluginNotReady", fmt.Sprintf("keeld's networks: %v", err)
	}
	i := slices.IndexFunc(nets, func(n client.Network) bool { return n.Default })
	if i < 0 {
		return "NetworkPluginNotReady", "keeld has no default network"
	}
	n, err := r.s.c.Networks().Get(ctx, nets[i].Name)
	if err != nil {
		return "NetworkPluginNotReady", fmt.Sprintf("network %s: %v", nets[i].Name, err)
	}
	if len(n.MissingPlugins) > 0 {
		return "NetworkPluginNotReady", fmt.Sprintf("network %s: CNI plugins not installed: %s", n.Name, strings.Join(n.MissingPlugins, ", "))
	}
	return "", ""
}

// UpdateRuntimeConfig makes the pod network of the pod CIDR
// (podnetwork.go), for the pods made from now on, and keeps the pod CIDR
// in keeld as a label of the CRI's namespace (PodCIDRLabel); an empty one
// changes nothing.
func (r *runtimeService) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	for _, part := range strings.Split(cidr, ",") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(part)); err != nil || p.Masked() != p {
			return nil, fmt.Errorf("pod CIDR %q is not a list of networks such as 10.244.0.0/24: %w", cidr, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := r.s.ensurePodNetwork(ctx, cidr); err != nil {
		return nil, err
	}
	if err := r.s.setNamespaceLabel(ctx, PodCIDRLabel, cidr); err != nil {
		return nil, err
	}
	r.s.logger.Info("pod CIDR set", "pod_cidr", cidr)
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

// RuntimeConfig: keel places pods and containers under the cgroup parent
// the kubelet gives, as cgroupfs paths.
func (r *runtimeService) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS},
	}, nil
}

// setNamespaceLabel sets a label of the CRI's keel namespace, making the
// namespace when it is not there yet.
func (s *Server) setNamespaceLabel(ctx context.Context, key, value string) error {
	nss := s.c.Namespaces()
	ns, err := nss.Get(ctx, s.cfg.Namespace)
	if errdefs.IsNotFound(err) {
		_, err = nss.Create(ctx, s.cfg.Namespace, map[string]string{key: value})
		if !errdefs.IsAlreadyExists(err) {
			return err
		}
		ns, err = nss.Get(ctx, s.cfg.Namespace)
	}
	if err != nil {
		return err
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels[key] = value
	_, err = nss.Update(ctx, ns, "labels."+key)
	return err
}

// PodCIDR is the pod CIDR the kubelet set, "" before it did.
func (s *Server) PodCIDR(ctx context.Context) (string, error) {
	ns, err := s.c.Namespaces().Get(ctx, s.cfg.Namespace)
	if errdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return ns.Labels[PodCIDRLabel], nil
}
