// Package host is the host half of the plugin wire: it starts a plugin
// executable, checks what it is, and hands out its connection. keeld's
// pluginhost and the conformance suites build on it; a plugin author's
// binary does not link it.
package host

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// ServerOptions are the gRPC server options of every keel endpoint: keeld's
// API serves with the same ones as each plugin.
func ServerOptions() []grpc.ServerOption { return wire.ServerOptions() }

// ReclaimOptions are server options that give the process's free memory
// back to the system once no call work says is work has been in flight for
// a second, after it allocated 8 MiB or more since the last time: as every
// plugin does (sdk.Serve). work names the calls that are work by full
// method; calls that last as long as their caller (event streams, waits)
// are not.
func ReclaimOptions(work func(method string) bool) []grpc.ServerOption {
	return wire.NewReclaimer(work).ServerOptions()
}

// DialOptions are the matching client options.
func DialOptions() []grpc.DialOption { return wire.DialOptions() }

// hostPlugins is the host side's plugin sets, by protocol version: every
// kind dispenses the raw connection, which the kind packages wrap in their
// typed clients. The kind itself is checked through Info.
func hostPlugins() map[int]plugin.PluginSet {
	set := plugin.PluginSet{}
	for _, k := range sdk.Kinds {
		set[k] = connPlugin{}
	}
	return map[int]plugin.PluginSet{sdk.ProtocolVersion: set}
}

// connPlugin is the go-plugin glue of the host side: it hands out the
// connection and serves nothing.
type connPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (connPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return fmt.Errorf("host side plugin cannot serve")
}

func (connPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return conn, nil
}
