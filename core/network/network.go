// Package network gives keel's containers CNI networks: it keeps the
// networks' conflists, owns each attached task's network namespace and
// calls the CNI plugins (github.com/containernetworking/cni/libcni) to
// attach and detach it.
//
// What it keeps (nothing under /var/lib/cni, /etc/cni or /run/netns):
//
//	<cni_conf_dir>/<name>.conflist        the networks (default <root>/cni/net.d)
//	<state>/netns/<ns>--<id>              a task's pinned network namespace
//	<state>/network/attachments/<tid>.json  the attachment record (write-ahead)
//	<state>/network/ipam/                 host-local's allocations
//	<state>/network/cache/                libcni's cache (config and result of each ADD)
//
// Networks are configuration and live in the root; everything about an
// attachment lives in the state dir, which a host reboot empties (a tmpfs
// such as /run) just as it ends every container: no IP, pin or record
// outlives the containers it was for.
//
// An attachment's record is written before its namespace and its ADDs, so
// a keeld killed midway finds it again; Reconcile tears down every record
// whose task no runtime has (DEL from libcni's cached config, which also
// releases the IP and the port rules when the namespace is gone).
package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/core/config"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Manager is keeld's networks and their attachments.
type Manager struct {
	cfg    config.Network
	state  string
	cni    *libcni.CNIConfig
	logger hclog.Logger

	mu sync.Mutex // guards the conf dir's writes, inflight and touched
	// inflight counts the attaches and detaches under way per task id;
	// touched notes the task ids attached or detached since Reconcile's
	// start, which it leaves alone (see Reconcile).
	inflight map[string]int
	touched  map[string]bool
	// reconcileMu makes one Reconcile at a time (they share touched).
	reconcileMu sync.Mutex
	// afterRecord, when set (a crash test's), runs once an attachment's
	// record is written, before anything else is made.
	afterRecord func()
}

// SetAfterRecordHook sets a function that runs right after each
// attachment record is first written (for crash tests).
func (m *Manager) SetAfterRecordHook(fn func()) { m.afterRecord = fn }

// New returns the manager of cfg (defaults filled in: config's
// NetworkConfig), keeping attachments under state.
func New(cfg config.Network, state string, logger hclog.Logger) *Manager {
	cache := filepath.Join(state, "network", "cache")
	return &Manager{
		cfg: cfg, state: state, logger: logger,
		cni:      libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, cache, &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}),
		inflight: map[string]int{}, touched: map[string]bool{},
	}
}

// DefaultName is the default network's name.
func (m *Manager) DefaultName() string { return m.cfg.DefaultName }

func (m *Manager) ipamDir() string   { return filepath.Join(m.state, "network", "ipam") }
func (m *Manager) recordDir() string { return filepath.Join(m.state, "network", "attachments") }
func (m *Manager) pinDir() string    { return filepath.Join(m.state, "netns") }
func (m *Manager) confPath(name string) string {
	return filepath.Join(m.cfg.CNIConfDir, name+".conflist")
}

// PinPath is where task tid's network namespace is pinned.
func (m *Manager) PinPath(tid string) string { return filepath.Join(m.pinDir(), tid) }

// requiredPlugins are the CNI plugins keel's conflists use.
var requiredPlugins = []string{"bridge", "host-local", "portmap", "firewall"}

// CheckPlugins says which CNI plugin is missing from the configured
// directories, if any.
func (m *Manager) CheckPlugins() error {
	for _, p := range requiredPlugins {
		if _, err := invoke.FindInPath(p, m.cfg.CNIBinDirs); err != nil {
			return fmt.Errorf("CNI plugin %q is not in %s: install containernetworking-plugins (or run with --net none or host): %w",
				p, strings.Join(m.cfg.CNIBinDirs, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// Network is a network as keel shows it.
type Network struct {
	Name    string
	Bridge  string
	Subnet  string
	Gateway string
	Labels  map[string]string
	// Default marks keeld's default network (from its config).
	Default bool
	// Plugins are the conflist's plugin types, in order.
	Plugins []string
}

// defaultBridge is the default network from the config.
func (m *Manager) defaultBridge() (Bridge, error) {
	p, gw, err := ParseSubnet(m.cfg.Subnet, "")
	if err != nil {
		return Bridge{}, fmt.Errorf("network block: %w", err)
	}
	return Bridge{Name: m.cfg.DefaultName, Bridge: m.cfg.DefaultBridge, Subnet: p, Gateway: gw,
		Masquerade: m.cfg.Masquerade, DefaultRoute: m.cfg.DefaultRoute}, nil
}

// ensureDefault writes the default network's conflist when it is missing
// or says other than the config (a changed config takes effect for new
// attachments; old ones are detached with their cached config).
func (m *Manager) ensureDefault() error {
	b, err := m.defaultBridge()
	if err != nil {
		return err
	}
	data, err := b.conflist(m.ipamDir(), true)
	if err != nil {
		return err
	}
	if cur, err := os.ReadFile(m.confPath(b.Name)); err == nil && string(cur) == string(data) {
		return nil
	}
	return m.writeConf(b.Name, data)
}

// writeConf writes name's conflist atomically; m.mu is held.
func (m *Manager) writeConf(name string, data []byte) error {
	if err := os.MkdirAll(m.cfg.CNIConfDir, 0o755); err != nil {
		return err
	}
	tmp := m.confPath(name) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, m.confPath(name))
}

// load reads network name's conflist, writing the default one first when
// it is that.
func (m *Manager) load(name string) (*libcni.NetworkConfigList, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if name == m.cfg.DefaultName {
		m.mu.Lock()
		err := m.ensureDefault()
		m.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("default network %q: %w", name, err)
		}
	}
	list, err := libcni.ConfListFromFile(m.confPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network %q: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", name, err)
	}
	return list, nil
}

// Get returns network name.
func (m *Manager) Get(name string) (Network, error) {
	list, err := m.load(name)
	if err != nil {
		return Network{}, err
	}
	return describe(list.Bytes)
}

// describe reads a conflist keel wrote (or an operator's: what it can).
func describe(data []byte) (Network, error) {
	var raw struct {
		Name    string   `json:"name"`
		Keel    keelMeta `json:"keel"`
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPAM   struct {
				Ranges [][]struct {
					Subnet  string `json:"subnet"`
					Gateway string `json:"gateway"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return Network{}, fmt.Errorf("conflist: %w", err)
	}
	n := Network{Name: raw.Name, Labels: raw.Keel.Labels, Default: raw.Keel.Default}
	for _, p := range raw.Plugins {
		n.Plugins = append(n.Plugins, p.Type)
		if p.Type == "bridge" {
			n.Bridge = p.Bridge
			if len(p.IPAM.Ranges) > 0 && len(p.IPAM.Ranges[0]) > 0 {
				n.Subnet, n.Gateway = p.IPAM.Ranges[0][0].Subnet, p.IPAM.Ranges[0][0].Gateway
			}
		}
	}
	return n, nil
}

// List returns the networks, the default one among them, by name.
func (m *Manager) List() ([]Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ensureDefault(); err != nil {
		return nil, err
	}
	return m.listLocked()
}

// CreateOpts are a new bridge network's settings.
type CreateOpts struct {
	Name string
	// Bridge is the Linux bridge; "keel-" and a few letters of the name
	// when empty.
	Bridge string
	// Subnet is required; Gateway defaults to its first address.
	Subnet, Gateway string
	Labels          map[string]string
}

// Create writes a bridge network. A user network gets no default route
// and no masquerade unless the default network has them (the config's
// masquerade and default_route).
func (m *Manager) Create(o CreateOpts) (Network, error) {
	if err := validName(o.Name); err != nil {
		return Network{}, err
	}
	if o.Subnet == "" {
		return Network{}, fmt.Errorf("network %q: a subnet is required (such as 10.7.1.0/24): %w", o.Name, errdefs.ErrInvalidArgument)
	}
	p, gw, err := ParseSubnet(o.Subnet, o.Gateway)
	if err != nil {
		return Network{}, fmt.Errorf("network %q: %w", o.Name, err)
	}
	if o.Bridge == "" {
		o.Bridge = bridgeName(o.Name)
	}
	if l := len(o.Bridge); l > 15 {
		return Network{}, fmt.Errorf("network %q: bridge %q: a Linux interface name is at most 15 characters: %w", o.Name, o.Bridge, errdefs.ErrInvalidArgument)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ensureDefault(); err != nil {
		return Network{}, err
	}
	existing, err := m.listLocked()
	if err != nil {
		return Network{}, err
	}
	for _, n := range existing {
		if n.Name == o.Name {
			return Network{}, fmt.Errorf("network %q: %w", o.Name, errdefs.ErrAlreadyExists)
		}
		if n.Bridge == o.Bridge {
			return Network{}, fmt.Errorf("network %q: bridge %q is network %q's: %w", o.Name, o.Bridge, n.Name, errdefs.ErrAlreadyExists)
		}
		if q, err := netip.ParsePrefix(n.Subnet); err == nil && q.Overlaps(p) {
			return Network{}, fmt.Errorf("network %q: subnet %s overlaps network %q's %s: %w", o.Name, p, n.Name, q, errdefs.ErrAlreadyExists)
		}
	}
	b := Bridge{Name: o.Name, Bridge: o.Bridge, Subnet: p, Gateway: gw, Labels: o.Labels,
		Masquerade: m.cfg.Masquerade, DefaultRoute: m.cfg.DefaultRoute}
	data, err := b.conflist(m.ipamDir(), false)
	if err != nil {
		return Network{}, err
	}
	if err := m.writeConf(o.Name, data); err != nil {
		return Network{}, err
	}
	return describe(data)
}

// listLocked reads the conf dir's networks, by name; m.mu is held.
func (m *Manager) listLocked() ([]Network, error) {
	files, err := libcni.ConfFiles(m.cfg.CNIConfDir, []string{".conflist"})
	if err != nil {
		return nil, err
	}
	var out []Network
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		n, err := describe(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// bridgeName is a Linux bridge name for network name.
func bridgeName(name string) string {
	b := "keel-" + name
	if len(b) > 15 {
		b = b[:15]
	}
	return b
}

// Delete removes network name: FailedPrecondition while a task is
// attached to it, and for the default network. The Linux bridge stays
// (as with nerdctl), idle.
func (m *Manager) Delete(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if name == m.cfg.DefaultName {
		return fmt.Errorf("network %q is keeld's default (the config's network block): %w", name, errdefs.ErrFailedPrecondition)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := os.Stat(m.confPath(name)); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network %q: %w", name, errdefs.ErrNotFound)
	}
	recs, err := m.Attachments()
	if err != nil {
		return err
	}
	var users []string
	for _, r := range recs {
		if slices.ContainsFunc(r.Links, func(l Link) bool { return l.Network == name }) {
			users = append(users, r.ID)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("network %q has attached tasks (%s): delete them first: %w", name, strings.Join(users, ", "), errdefs.ErrFailedPrecondition)
	}
	return os.Remove(m.confPath(name))
}
