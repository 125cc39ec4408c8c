package client

import (
	"context"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

// Info describes the keeld the client talks to (keel info).
type Info struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Pid      int    `json:"pid"`
	// Root and State are keeld's directories, Address its API socket.
	Root    string `json:"root"`
	State   string `json:"state"`
	Address string `json:"address"`
	// ConfigFile is the file keeld read its config from; "" for its
	// embedded default.
	ConfigFile string `json:"config_file"`
	LogLevel   string `json:"log_level"`
	LogFormat  string `json:"log_format"`
	// CgroupVersion is the host's cgroup mode: v1, hybrid or v2.
	CgroupVersion string   `json:"cgroup_version"`
	Plugins       []Plugin `json:"plugins"`
	// DefaultSnapshotter is the snapshotter of calls that name none.
	DefaultSnapshotter string `json:"default_snapshotter"`
	// CRI is the CRI server keeld supervises; nil when not enabled.
	CRI *CRIServer `json:"cri,omitempty"`
}

// CRIServer is the health of keel-cri, the CRI server keeld starts,
// restarts when it dies and stops at its exit.
type CRIServer struct {
	// Address is its CRI socket, Path its executable.
	Address string `json:"address"`
	Path    string `json:"path"`
	// State is "starting", "running", "restarting" (LastError says why)
	// or "stopped".
	State     string `json:"state"`
	Pid       int    `json:"pid"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
	// Namespace is the keel namespace of its images, pods and containers.
	Namespace string `json:"namespace"`
}

// Info asks keeld what it is and how it runs.
func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := keelv1.NewSystemClient(c.conn).Info(ctx, &keelv1.InfoRequest{})
	if err != nil {
		return Info{}, err
	}
	return Info{
		Version:       r.Version,
		Revision:      r.Revision,
		Pid:           int(r.Pid),
		Root:          r.Root,
		State:         r.State,
		Address:       r.Address,
		ConfigFile:    r.ConfigFile,
		LogLevel:      r.LogLevel,
		LogFormat:     r.LogFormat,
		CgroupVersion: r.CgroupVersion,
		Plugins:       pluginsFromProto(r.Plugins),

		DefaultSnapshotter: r.DefaultSnapshotter,
		CRI:                criServerFromProto(r.Cri),
	}, nil
}

func criServerFromProto(p *keelv1.CRIServer) *CRIServer {
	if p == nil {
		return nil
	}
	return &CRIServer{Address: p.Address, Path: p.Path, State: p.State, Pid: int(p.Pid),
		Restarts: int(p.Restarts), LastError: p.LastError, Namespace: p.Namespace}
}
