package cri

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// The pod network: once the kubelet gives a pod CIDR (UpdateRuntimeConfig),
// pods made after it are attached to a keel bridge network of that subnet,
// PodNetworkName, which keel-cri makes through keeld's Networks API (a
// bridge with host-local IPAM over the whole CIDR, the gateway its first
// address, masquerade and default route as keeld's network block says).
// This is what containerd does with a CNI conf_template of
// {{.PodCIDR}}, without a template to write: the network is keeld's, so a
// restarted keel-cri or keeld finds it again. Before any pod CIDR, pods
// use keeld's default network. Pods keep the network they were attached
// to; a new pod CIDR replaces the network only while no pod is attached to
// it (else FailedPrecondition: a kubelet changes a node's pod CIDR only
// when the node is made again). A keel network holds one subnet: of a
// dual-stack pod CIDR list the first is used.

// PodNetworkName is the keel network of the pods once a pod CIDR is set.
const PodNetworkName = "k8s-pods"

// PodNetworkBridge is the Linux bridge of the pod network of subnet:
// named after the subnet, so that keelds with different pod CIDRs on one
// host never share a bridge.
func PodNetworkBridge(subnet string) string {
	sum := sha256.Sum256([]byte(subnet))
	return "keelpod" + hex.EncodeToString(sum[:4])
}

// podSubnet is the subnet of the pod network for the kubelet's pod CIDR
// list: its first.
func podSubnet(cidr string) string {
	first, _, _ := strings.Cut(cidr, ",")
	return strings.TrimSpace(first)
}

// ensurePodNetwork makes the pod network for pod CIDR cidr, or replaces
// one of another subnet that no pod uses, and returns its name.
func (s *Server) ensurePodNetwork(ctx context.Context, cidr string) (string, error) {
	subnet := podSubnet(cidr)
	nets := s.c.Networks()
	n, err := nets.Get(ctx, PodNetworkName)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return "", err
	case n.Subnet == subnet:
		return n.Name, nil
	case len(n.Endpoints) > 0:
		return "", fmt.Errorf("pod CIDR %s: pods are attached to network %s of subnet %s: remove them before the pod CIDR changes: %w",
			cidr, n.Name, n.Subnet, errdefs.ErrFailedPrecondition)
	default:
		if err := nets.Delete(ctx, PodNetworkName); err != nil && !errdefs.IsNotFound(err) {
			return "", err
		}
		s.logger.Info("pod network removed for a new pod CIDR", "network", PodNetworkName, "subnet", n.Subnet)
	}
	if strings.Contains(cidr, ",") {
		s.logger.Warn("a keel network holds one subnet: pods get addresses of the first pod CIDR only", "pod_cidr", cidr, "subnet", subnet)
	}
	created, err := nets.Create(ctx, client.NetworkCreateOpts{Name: PodNetworkName, Bridge: PodNetworkBridge(subnet), Subnet: subnet,
		Labels: map[string]string{PodCIDRLabel: cidr}})
	if errdefs.IsAlreadyExists(err) {
		// Made meanwhile by a concurrent call (the kubelet runs pods in
		// parallel): fine when it is of this subnet.
		if n, gerr := nets.Get(ctx, PodNetworkName); gerr == nil && n.Subnet == subnet {
			return n.Name, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("pod CIDR %s: %w", cidr, err)
	}
	s.logger.Info("pod network made", "network", created.Name, "subnet", created.Subnet, "bridge", created.Bridge)
	return created.Name, nil
}

// podNetwork is the network a new pod joins: the pod network when a pod
// CIDR is set (made again if it was removed), "" (keeld's default) before.
func (s *Server) podNetwork(ctx context.Context) (string, error) {
	cidr, err := s.PodCIDR(ctx)
	if err != nil || cidr == "" {
		return "", err
	}
	return s.ensurePodNetwork(ctx, cidr)
}

// networkOf is the keel network a pod's task is attached to: the one its
// record names, else keeld's default; "" when keeld has none.
func (s *Server) networkOf(ctx context.Context, info client.ContainerInfo) (client.Network, error) {
	if info.Network != nil && len(info.Network.Networks) > 0 {
		return s.c.Networks().Get(ctx, info.Network.Networks[0])
	}
	nets, err := s.c.Networks().List(ctx)
	if err != nil {
		return client.Network{}, err
	}
	i := slices.IndexFunc(nets, func(n client.Network) bool { return n.Default })
	if i < 0 {
		return client.Network{}, nil
	}
	return s.c.Networks().Get(ctx, nets[i].Name)
}
