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
	}, nil
}
