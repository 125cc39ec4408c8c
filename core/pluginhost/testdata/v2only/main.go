// Command v2only is a test plugin that speaks only plugin protocol 2, as a
// plugin built for a newer keel would.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
)

type v2 struct{ plugin.NetRPCUnsupportedPlugin }

func (v2) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (v2) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	hs := sdk.Handshake
	hs.ProtocolVersion = 2
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  hs,
		VersionedPlugins: map[int]plugin.PluginSet{2: {sdk.KindSnapshotter: v2{}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
