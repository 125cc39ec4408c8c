package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// PortMapping publishes a container port on the host (portmap's
// portMappings capability).
type PortMapping struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// Link is a task's interface on one network.
type Link struct {
	Network string `json:"network"`
	IfName  string `json:"ifname"`
	// IPs are the interface's addresses in CIDR form, once added.
	IPs     []string `json:"ips,omitempty"`
	Gateway string   `json:"gateway,omitempty"`
}

// Attachment is a task's record: written before anything is made for it,
// completed when its namespace is up.
type Attachment struct {
	// ID is the runtime task id (<ns>--<id>), the CNI container id.
	ID    string        `json:"id"`
	NetNS string        `json:"netns"`
	Links []Link        `json:"links"`
	Ports []PortMapping `json:"ports,omitempty"`
	Ready bool          `json:"ready"`
}

// IPs are the addresses of every link, without their prefix length.
func (a Attachment) IPs() []string {
	var out []string
	for _, l := range a.Links {
		for _, ip := range l.IPs {
			addr, _, _ := strings.Cut(ip, "/")
			out = append(out, addr)
		}
	}
	return out
}

func (m *Manager) recordPath(tid string) string { return filepath.Join(m.recordDir(), tid+".json") }

func (m *Manager) writeRecord(a Attachment) error {
	if err := os.MkdirAll(m.recordDir(), 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp := m.recordPath(a.ID) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.recordPath(a.ID))
}

// Attachment returns task tid's record; NotFound when it has none.
func (m *Manager) Attachment(tid string) (Attachment, error) {
	data, err := os.ReadFile(m.recordPath(tid))
	if errors.Is(err, os.ErrNotExist) {
		return Attachment{}, fmt.Errorf("network attachment of %q: %w", tid, errdefs.ErrNotFound)
	}
	if err != nil {
		return Attachment{}, err
	}
	var a Attachment
	if err := json.Unmarshal(data, &a); err != nil {
		return Attachment{}, fmt.Errorf("network attachment of %q: %w", tid, err)
	}
	return a, nil
}

// Attachments returns every record.
func (m *Manager) Attachments() ([]Attachment, error) {
	entries, err := os.ReadDir(m.recordDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, e := range entries {
		tid, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		a, err := m.Attachment(tid)
		if err != nil {
			// A torn record (killed mid-write is impossible: rename) is
			// still a task's: keep its id so Reconcile can tear it down.
			a = Attachment{ID: tid, NetNS: m.PinPath(tid)}
		}
		out = append(out, a)
	}
	return out, nil
}

// begin and end bracket an attach or detach of tid (see Reconcile).
func (m *Manager) begin(tid string) {
	m.mu.Lock()
	m.inflight[tid]++
	m.touched[tid] = true
	m.mu.Unlock()
}

func (m *Manager) end(tid string) {
	m.mu.Lock()
	if m.inflight[tid]--; m.inflight[tid] <= 0 {
		delete(m.inflight, tid)
	}
	m.touched[tid] = true
	m.mu.Unlock()
}

// Attach makes task tid's network namespace and attaches it to networks
// (eth0, eth1, … in order), publishing ports on the first. The task stays
// in flight (Reconcile leaves it alone) until Settled, which the caller
// calls once the runtime has the task, or has failed to make it (then
// after Detach). On error, what Attach made is undone.
func (m *Manager) Attach(ctx context.Context, tid string, networks []string, ports []PortMapping) (_ Attachment, err error) {
	if len(networks) == 0 {
		return Attachment{}, fmt.Errorf("task %q: no network to attach: %w", tid, errdefs.ErrInvalidArgument)
	}
	lists := make([]*libcni.NetworkConfigList, len(networks))
	for i, name := range networks {
		if lists[i], err = m.load(name); err != nil {
			return Attachment{}, err
		}
		for _, prev := range networks[:i] {
			if prev == name {
				return Attachment{}, fmt.Errorf("network %q named twice: %w", name, errdefs.ErrInvalidArgument)
			}
		}
	}
	if err := m.CheckPlugins(); err != nil {
		return Attachment{}, err
	}
	m.begin(tid)
	a := Attachment{ID: tid, NetNS: m.PinPath(tid), Ports: ports}
	for i, name := range networks {
		a.Links = append(a.Links, Link{Network: name, IfName: fmt.Sprintf("eth%d", i)})
	}
	// A record left by a task of the same id that keeld lost is torn
	// down first.
	if old, err := m.Attachment(tid); err == nil {
		if err := m.teardown(ctx, old); err != nil {
			m.end(tid)
			return Attachment{}, err
		}
	}
	defer func() {
		if err != nil {
			if derr := m.teardown(context.WithoutCancel(ctx), a); derr != nil {
				m.logger.Warn("undoing a failed network attach", "task", tid, "error", derr)
			}
			m.end(tid)
		}
	}()
	if err := m.writeRecord(a); err != nil {
		return a, err
	}
	if m.afterRecord != nil {
		m.afterRecord()
	}
	if err := newNetNS(a.NetNS); err != nil {
		return a, err
	}
	for i, list := range lists {
		rt := &libcni.RuntimeConf{ContainerID: tid, NetNS: a.NetNS, IfName: a.Links[i].IfName}
		if i == 0 && len(ports) > 0 {
			rt.CapabilityArgs = map[string]any{"portMappings": ports}
		}
		res, err := m.cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return a, fmt.Errorf("task %q: attach network %q: %w", tid, list.Name, err)
		}
		r, err := types100.NewResultFromResult(res)
		if err != nil {
			return a, fmt.Errorf("task %q: network %q: result: %w", tid, list.Name, err)
		}
		for _, ip := range r.IPs {
			if ip.Interface != nil && *ip.Interface < len(r.Interfaces) && r.Interfaces[*ip.Interface].Sandbox == "" {
				continue // the host's side
			}
			a.Links[i].IPs = append(a.Links[i].IPs, ip.Address.String())
			if ip.Gateway != nil {
				a.Links[i].Gateway = ip.Gateway.String()
			}
		}
	}
	a.Ready = true
	if err := m.writeRecord(a); err != nil {
		return a, err
	}
	return a, nil
}

// Settled ends Attach's in-flight guard of tid.
func (m *Manager) Settled(tid string) { m.end(tid) }

// Detach tears task tid's attachment down, if it has one.
func (m *Manager) Detach(ctx context.Context, tid string) error {
	a, err := m.Attachment(tid)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	m.begin(tid)
	defer m.end(tid)
	return m.teardown(ctx, a)
}

// teardown runs CNI DEL for each of a's networks (last first) with the
// config libcni cached at ADD (so a network since deleted or changed is
// still undone as it was made), then unpins the
// namespace and removes the record. A namespace that is gone is no
// error: DEL without one still releases the IP and the port rules.
func (m *Manager) teardown(ctx context.Context, a Attachment) error {
	netns := a.NetNS
	if netns == "" {
		netns = m.PinPath(a.ID)
	}
	inNS := netns
	if !isNetNS(netns) {
		inNS = ""
	}
	var errs []error
	for i := len(a.Links) - 1; i >= 0; i-- {
		l := a.Links[i]
		rt := &libcni.RuntimeConf{ContainerID: a.ID, NetNS: inNS, IfName: l.IfName}
		list, cached, err := m.cachedList(l.Network, rt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if list == nil {
			continue // never added, and the network is gone: nothing to undo
		}
		if err := m.cni.DelNetworkList(ctx, list, cached); err != nil {
			errs = append(errs, fmt.Errorf("task %q: detach network %q: %w", a.ID, l.Network, err))
		}
	}
	// An attachment an earlier keeld made ran CNI's loopback plugin: its
	// DEL releases what libcni cached of that ADD.
	rt := &libcni.RuntimeConf{ContainerID: a.ID, NetNS: inNS, IfName: "lo"}
	if list, cached, err := m.cachedList(loopbackNetwork, rt); err != nil {
		errs = append(errs, err)
	} else if list != nil {
		if err := m.cni.DelNetworkList(ctx, list, cached); err != nil {
			errs = append(errs, fmt.Errorf("task %q: loopback: %w", a.ID, err))
		}
	}
	if len(errs) > 0 {
		// The record stays, for the next Reconcile to try again.
		return errors.Join(errs...)
	}
	if err := removeNetNS(netns); err != nil {
		return err
	}
	if err := os.Remove(m.recordPath(a.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// cachedList is the config network was added with for rt (libcni's
// cache), else its current conflist, else nil.
func (m *Manager) cachedList(network string, rt *libcni.RuntimeConf) (*libcni.NetworkConfigList, *libcni.RuntimeConf, error) {
	data, cached, err := m.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: network}, rt)
	if err != nil {
		return nil, nil, err
	}
	if data != nil {
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("network %q: cached config: %w", network, err)
		}
		return list, cached, nil
	}
	list, err := libcni.ConfListFromFile(m.confPath(network))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return list, rt, nil
}

// Reconcile tears down every attachment (and pinned namespace without a
// record) whose task is not among live, the runtimes' task ids listed
// after Reconcile was called; live is called once. An attach or detach
// under way, or done since Reconcile began, is left alone: its task may
// be younger than live's list.
func (m *Manager) Reconcile(ctx context.Context, live func(context.Context) (map[string]bool, error)) (torn []string, err error) {
	m.reconcileMu.Lock()
	defer m.reconcileMu.Unlock()
	// With no record and no pin there is nothing to tear down: the
	// runtimes are not asked, so an idle one is not started for it.
	recs, err := m.Attachments()
	if err != nil {
		return nil, err
	}
	if pins, _ := os.ReadDir(m.pinDir()); len(recs) == 0 && len(pins) == 0 {
		return nil, nil
	}
	m.mu.Lock()
	m.touched = map[string]bool{}
	m.mu.Unlock()
	tasks, err := live(ctx)
	if err != nil {
		return nil, fmt.Errorf("network reconcile: list tasks: %w", err)
	}
	// Read again: records written before the list are complete in it.
	if recs, err = m.Attachments(); err != nil {
		return nil, err
	}
	have := map[string]bool{}
	var errs []error
	for _, a := range recs {
		have[a.ID] = true
		if tasks[a.ID] || !m.claim(a.ID) {
			continue
		}
		if err := m.teardown(ctx, a); err != nil {
			errs = append(errs, err)
		} else {
			torn = append(torn, a.ID)
		}
		m.end(a.ID)
	}
	// Pins without a record (killed between the record's removal and
	// the unpin cannot happen: the record goes last; this is for pins
	// an older keeld left).
	pins, _ := os.ReadDir(m.pinDir())
	for _, p := range pins {
		tid := p.Name()
		if have[tid] || tasks[tid] || !m.claim(tid) {
			continue
		}
		if err := removeNetNS(m.PinPath(tid)); err != nil {
			errs = append(errs, err)
		} else {
			torn = append(torn, tid)
		}
		m.end(tid)
	}
	return torn, errors.Join(errs...)
}

// claim begins a teardown of tid unless it is in flight or was touched
// since Reconcile began.
func (m *Manager) claim(tid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inflight[tid] > 0 || m.touched[tid] {
		return false
	}
	m.inflight[tid]++
	return true
}
