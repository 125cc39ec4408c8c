package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/core/gc"
	"github.com/keel-runtime/keel/core/metadata"
	"github.com/keel-runtime/keel/core/network"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// envNetworkCrash, set to "after-record" in a test, makes keeld SIGKILL
// itself once a network attachment's record is written, before its
// namespace and CNI ADD: the leak a crash mid-create leaves.
const envNetworkCrash = "KEEL_TEST_NETWORK_CRASH"

// startNetwork makes the network manager and tears down the attachments
// whose tasks a killed keeld (or a runtime's lost state) left: a running
// task keeps its network.
func (s *Server) startNetwork() {
	s.net = network.New(s.cfg.NetworkConfig(), s.cfg.State, s.logger.Named("network"))
	if os.Getenv(envNetworkCrash) == "after-record" {
		s.net.SetAfterRecordHook(func() {
			s.logger.Warn("crashing after a network attachment's record", "env", envNetworkCrash)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the kill lands first
		})
	}
	s.reconcileNetworks(context.Background())
}

// reconcileNetworks is network.Manager.Reconcile over every runtime's
// tasks; keeld's start and each collection run it.
func (s *Server) reconcileNetworks(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	torn, err := s.net.Reconcile(ctx, s.liveTasks)
	for _, tid := range torn {
		s.logger.Info("released the network of a task that is gone", "task", tid)
	}
	if err != nil {
		s.logger.Warn("network reconcile", "error", err)
	}
}

// liveTasks are every runtime's task ids; an error when any runtime
// cannot say (then nothing is torn down).
func (s *Server) liveTasks(ctx context.Context) (map[string]bool, error) {
	live := map[string]bool{}
	err := s.listTasks(ctx, func(_ string, st runtime.TaskState) { live[st.ID] = true })
	return live, err
}

// listTasks asks every runtime for its tasks at once and calls fn for
// each (one call at a time); the errors are joined.
func (s *Server) listTasks(ctx context.Context, fn func(runtime string, st runtime.TaskState)) error {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for name, rt := range s.runtimes {
		wg.Go(func() {
			list, err := rt.List(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("runtime %q: %w", name, err))
				return
			}
			for _, st := range list {
				fn(name, st)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// networkedGC is a collection, then a network reconcile in the
// background: it lists every runtime's tasks, which may take a while, and
// the scheduler's next collection must not wait for it.
type networkedGC struct{ s *Server }

func (g networkedGC) GarbageCollect(ctx context.Context, opts gc.Options) (gc.Report, error) {
	r, err := g.s.db.GarbageCollect(ctx, opts)
	if !opts.DryRun {
		go g.s.reconcileNetworks(context.WithoutCancel(ctx))
	}
	return r, err
}

// containerNetwork decodes c's network attachment; nil when it has none.
func containerNetwork(c metadata.Container) (*keelv1.ContainerNetwork, error) {
	if len(c.Network) == 0 {
		return nil, nil
	}
	var cn keelv1.ContainerNetwork
	if err := proto.Unmarshal(c.Network, &cn); err != nil {
		return nil, fmt.Errorf("container %q: network: %v: %w", c.ID, err, errdefs.ErrDataLoss)
	}
	return &cn, nil
}

// validateNetwork checks a container's network attachment before it is
// recorded: its networks exist (and the CNI plugins are there), its ports,
// DNS servers and hosts parse.
func (s *Server) validateNetwork(id string, cn *keelv1.ContainerNetwork) error {
	if cn == nil {
		return nil
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("container %q: network: %s: %w", id, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
	}
	switch cn.Mode {
	case keelv1.NetworkMode_NETWORK_MODE_CNI:
		if len(cn.Networks) == 0 {
			return bad("CNI mode names no network")
		}
		if err := s.net.CheckPlugins(); err != nil {
			return fmt.Errorf("container %q: %w", id, err)
		}
		for _, n := range cn.Networks {
			if _, err := s.net.Get(n); err != nil {
				return fmt.Errorf("container %q: %w", id, err)
			}
		}
	case keelv1.NetworkMode_NETWORK_MODE_CONTAINER:
		if cn.Container == "" || cn.Container == id {
			return bad("container mode needs another container's id")
		}
	case keelv1.NetworkMode_NETWORK_MODE_UNSPECIFIED, keelv1.NetworkMode_NETWORK_MODE_NONE, keelv1.NetworkMode_NETWORK_MODE_HOST:
	default:
		return bad("unknown mode %d", cn.Mode)
	}
	if len(cn.Ports) > 0 && cn.Mode != keelv1.NetworkMode_NETWORK_MODE_CNI {
		return bad("ports are published only on CNI networks")
	}
	seen := map[string]bool{}
	for _, p := range cn.Ports {
		if p.HostPort < 1 || p.HostPort > 65535 || p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return bad("port %d:%d: ports are 1 to 65535", p.HostPort, p.ContainerPort)
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			return bad("port protocol %q: want tcp or udp", p.Protocol)
		}
		if p.HostIp != "" {
			if _, err := netip.ParseAddr(p.HostIp); err != nil {
				return bad("port host IP %q is not an address", p.HostIp)
			}
		}
		key := fmt.Sprintf("%s:%d/%s", p.HostIp, p.HostPort, p.Protocol)
		if seen[key] {
			return bad("host port %s published twice", key)
		}
		seen[key] = true
	}
	for _, d := range cn.GetDns().GetServers() {
		if _, err := netip.ParseAddr(d); err != nil {
			return bad("DNS server %q is not an address", d)
		}
	}
	for _, h := range cn.ExtraHosts {
		if _, err := netip.ParseAddr(h.Ip); err != nil || h.Host == "" {
			return bad("extra host %q:%q: want NAME:IP", h.Host, h.Ip)
		}
	}
	return nil
}

// setupNetwork gives task tid of container c its network, per c's
// attachment, before the runtime makes it: the namespace (CNI networks
// attached, another container's, the host's) in spec, and its
// resolv.conf, hosts and hostname. settle must be called once the
// runtime's create returned: it undoes a CNI attachment the task did not
// get.
func (s *Server) setupNetwork(ctx context.Context, c metadata.Container, tid string, spec *specs.Spec) (settle func(created bool), err error) {
	settle = func(bool) {}
	cn, err := containerNetwork(c)
	if err != nil {
		return settle, err
	}
	if cn == nil {
		cn = &keelv1.ContainerNetwork{}
	}
	mode := cn.Mode
	// Unspecified, the spec's namespaces stand as they are (a path the
	// embedder set included); only the files are written.
	fromSpec := mode == keelv1.NetworkMode_NETWORK_MODE_UNSPECIFIED
	if fromSpec {
		mode = keelv1.NetworkMode_NETWORK_MODE_NONE
		if usesHostNetwork(spec) {
			mode = keelv1.NetworkMode_NETWORK_MODE_HOST
		}
	}
	dns := network.DNS{Servers: cn.GetDns().GetServers(), Search: cn.GetDns().GetSearch(), Options: cn.GetDns().GetOptions()}
	var extra []network.HostEntry
	for _, h := range cn.ExtraHosts {
		extra = append(extra, network.HostEntry{Host: h.Host, IP: h.Ip})
	}
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !os.IsNotExist(err) {
		return settle, fmt.Errorf("container %q: %w", c.ID, err)
	}
	files := map[string][]byte{}
	if spec.Hostname != "" {
		files["/etc/hostname"] = []byte(spec.Hostname + "\n")
	}
	switch mode {
	case keelv1.NetworkMode_NETWORK_MODE_HOST:
		if !fromSpec {
			setNetNS(spec, false, "")
		}
		// The host's own files, as they are: its loopback resolver is
		// the container's too.
		hosts, err := os.ReadFile("/etc/hosts")
		if err != nil && !os.IsNotExist(err) {
			return settle, fmt.Errorf("container %q: %w", c.ID, err)
		}
		files["/etc/hosts"] = append(hosts, network.ExtraHosts(extra)...)
		files["/etc/resolv.conf"] = hostResolv
		if len(dns.Servers)+len(dns.Search)+len(dns.Options) > 0 {
			files["/etc/resolv.conf"] = network.ResolvConf(hostResolv, dns)
		}
	case keelv1.NetworkMode_NETWORK_MODE_NONE:
		if !fromSpec {
			setNetNS(spec, true, "")
		}
		files["/etc/hosts"] = network.Hosts(spec.Hostname, nil, extra)
		files["/etc/resolv.conf"] = network.ResolvConf(hostResolv, dns)
	case keelv1.NetworkMode_NETWORK_MODE_CNI:
		ports := make([]network.PortMapping, 0, len(cn.Ports))
		for _, p := range cn.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			ports = append(ports, network.PortMapping{HostIP: p.HostIp, HostPort: int32(p.HostPort), ContainerPort: int32(p.ContainerPort), Protocol: proto})
		}
		a, err := s.net.Attach(ctx, tid, cn.Networks, ports)
		if err != nil {
			return settle, fmt.Errorf("container %q: %w", c.ID, err)
		}
		settle = func(created bool) {
			if !created {
				if err := s.net.Detach(context.WithoutCancel(ctx), tid); err != nil {
					s.logger.Warn("undoing the network of a task not made", "task", tid, "error", err)
				}
			}
			s.net.Settled(tid)
		}
		setNetNS(spec, true, a.NetNS)
		files["/etc/hosts"] = network.Hosts(spec.Hostname, a.IPs(), extra)
		files["/etc/resolv.conf"] = network.ResolvConf(hostResolv, dns)
	case keelv1.NetworkMode_NETWORK_MODE_CONTAINER:
		path, dir, err := s.sharedNetNS(ctx, cn.Container)
		if err != nil {
			return settle, fmt.Errorf("container %q: %w", c.ID, err)
		}
		setNetNS(spec, path != "", path)
		// The other's files, as Docker shares them (its name too: a pod's
		// containers share the sandbox's UTS namespace).
		for _, f := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
			if data, err := os.ReadFile(filepath.Join(dir, filepath.Base(f))); err == nil {
				files[f] = data
			}
		}
	}
	if err := s.mountEtcFiles(ctx, c.ID, spec, files); err != nil {
		settle(false)
		return func(bool) {}, err
	}
	return settle, nil
}

// setNetNS gives spec a network namespace (at path; a new one when empty)
// or, without own, the host's.
func setNetNS(spec *specs.Spec, own bool, path string) {
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	spec.Linux.Namespaces = slices.DeleteFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace })
	if own {
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})
	}
}

// sharedNetNS is the network namespace of container id's running task
// (its pin when keeld made it, else its process's; "" for the host's) and
// the dir of its files.
func (s *Server) sharedNetNS(ctx context.Context, id string) (path, dir string, err error) {
	other, err := s.db.Containers().Get(ctx, id)
	if err != nil {
		return "", "", fmt.Errorf("network of container %q: %w", id, err)
	}
	rt, err := s.runtime(other.Runtime)
	if err != nil {
		return "", "", err
	}
	tid, err := taskID(ctx, id)
	if err != nil {
		return "", "", err
	}
	st, err := rt.State(ctx, tid, "")
	if err != nil || st.Status != runtime.StatusRunning {
		return "", "", fmt.Errorf("network of container %q: its task is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if dir, err = s.containerStateDir(ctx, id); err != nil {
		return "", "", err
	}
	if a, err := s.net.Attachment(tid); err == nil {
		return a.NetNS, dir, nil
	}
	if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", st.Pid)); err == nil {
		if self, _ := os.Readlink("/proc/1/ns/net"); ns == self {
			return "", dir, nil // on the host's network
		}
	}
	return fmt.Sprintf("/proc/%d/ns/net", st.Pid), dir, nil
}

// teardownNetwork detaches task tid's networks once it is deleted; what
// fails is logged and left to the next reconcile.
func (s *Server) teardownNetwork(ctx context.Context, tid string) {
	if err := s.net.Detach(context.WithoutCancel(ctx), tid); err != nil {
		s.logger.Warn("releasing a deleted task's network; the next collection retries", "task", tid, "error", err)
	}
}

// networksService serves keel.v1.Networks.
type networksService struct {
	keelv1.UnimplementedNetworksServer
	s *Server
}

func (s *Server) registerNetworks(srv *grpc.Server) {
	keelv1.RegisterNetworksServer(srv, networksService{s: s})
}

func networkToProto(n network.Network) *keelv1.Network {
	return &keelv1.Network{Name: n.Name, Bridge: n.Bridge, Subnet: n.Subnet, Gateway: n.Gateway,
		Labels: n.Labels, Default: n.Default, Plugins: n.Plugins}
}

func (ns networksService) Create(_ context.Context, req *keelv1.CreateNetworkRequest) (*keelv1.Network, error) {
	n, err := ns.s.net.Create(network.CreateOpts{Name: req.Name, Bridge: req.Bridge, Subnet: req.Subnet, Gateway: req.Gateway, Labels: req.Labels})
	if err != nil {
		return nil, err
	}
	return networkToProto(n), nil
}

func (ns networksService) Get(_ context.Context, req *keelv1.GetNetworkRequest) (*keelv1.Network, error) {
	n, err := ns.s.net.Get(req.Name)
	if err != nil {
		return nil, err
	}
	out := networkToProto(n)
	out.MissingPlugins = missingCNIPlugins(ns.s.cfg.NetworkConfig().CNIBinDirs, out.Plugins)
	recs, err := ns.s.net.Attachments()
	if err != nil {
		return nil, err
	}
	for _, a := range recs {
		tns, id, _ := splitTaskID(a.ID)
		for _, l := range a.Links {
			if l.Network == req.Name {
				out.Endpoints = append(out.Endpoints, &keelv1.NetworkEndpoint{Namespace: tns, ContainerId: id, Ifname: l.IfName, Ips: l.IPs})
			}
		}
	}
	return out, nil
}

func (ns networksService) List(context.Context, *keelv1.ListNetworksRequest) (*keelv1.ListNetworksResponse, error) {
	list, err := ns.s.net.List()
	if err != nil {
		return nil, err
	}
	resp := &keelv1.ListNetworksResponse{}
	for _, n := range list {
		resp.Networks = append(resp.Networks, networkToProto(n))
	}
	return resp, nil
}

func (ns networksService) Delete(_ context.Context, req *keelv1.DeleteNetworkRequest) (*keelv1.DeleteNetworkResponse, error) {
	if err := ns.s.net.Delete(req.Name); err != nil {
		return nil, err
	}
	return &keelv1.DeleteNetworkResponse{}, nil
}
