// Package sdk is what a keel plugin author imports: the handshake, the base
// service every plugin serves, and Serve, which runs a plugin process. Each
// plugin kind has its own package (sdk/snapshot, sdk/content, sdk/resolver,
// sdk/runtime) holding its Go interface, its gRPC glue and a Plugin function
// that builds the Definition Serve takes (the package's Example, which
// compiles; docs/example/snapshotter is a whole plugin):
//
//	func main() { sdk.Serve(snapshot.Plugin("copy", "0.1.0", New)) }
//
// A plugin's lifecycle: the process starts and answers Info; keeld calls
// Configure, which decodes the config and builds the implementation (New);
// calls are served; on shutdown the implementation's Close runs. A call to
// the kind's service before Configure fails with FailedPrecondition.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk/internal/wire"
)

// Plugin kinds.
const (
	KindSnapshotter = "snapshotter"
	KindContent     = "content"
	KindResolver    = "resolver"
	KindRuntime     = "runtime"
)

// Kinds lists every plugin kind keel knows.
var Kinds = []string{KindSnapshotter, KindContent, KindResolver, KindRuntime}

// ProtocolVersion is the newest plugin protocol this sdk speaks. A later
// protocol is added beside it in VersionedPlugins, so v1 plugins keep working.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by keeld and every plugin. The
// cookie only keeps a plugin binary from being run by hand by mistake.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KEEL_PLUGIN",
	MagicCookieValue: "d6f1a3c2-keel-plugin-v1",
}

// MaxMessageSize bounds one gRPC message on plugin connections, far above
// gRPC's 4 MiB default. Bulk data still moves in ChunkSize pieces and lists
// stream; the bound is for large label sets and specs.
const MaxMessageSize = wire.MaxMessageSize

// ChunkSize is the size of one piece of a streamed blob or layer.
const ChunkSize = 1 << 20

// Env is what keeld hands a plugin at Configure.
type Env struct {
	// Instance is "<kind>.<name>" as keeld's config names the plugin.
	Instance string
	// Root holds the plugin's persistent data, State its runtime data
	// (sockets, pids); keeld creates both.
	Root  string
	State string
	// Logger writes JSON to stderr, which keeld logs under the plugin's name.
	// Serve and the conformance suites always set it, and a factory may
	// use it unchecked: an Env built by hand (a plugin's own test calling
	// its factory) must set one too, e.g. hclog.NewNullLogger().
	Logger hclog.Logger
	// Config is the plugin's `config {}` block as JSON ("{}" when absent).
	Config json.RawMessage
}

// DecodeConfig decodes the config block into v, refusing unknown keys with
// an InvalidArgument error that names them. An error about one key (unknown,
// or of the wrong type) is a ConfigKeyError, so keeld points at its line.
func (e Env) DecodeConfig(v any) error {
	raw := e.Config
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeConfigError(err)
	}
	return nil
}

// Definition describes a plugin to Serve. The kind packages build it; a
// plugin author rarely fills one by hand.
type Definition struct {
	Kind    string
	Name    string
	Version string
	// Capabilities are announced by Info before Configure. An implementation
	// may add more by implementing Capable.
	Capabilities []string
	// New builds the implementation at Configure.
	New func(ctx context.Context, env Env) (io.Closer, error)
	// Register adds the kind's gRPC service. impl returns the configured
	// implementation, or a FailedPrecondition error before Configure.
	Register func(s *grpc.Server, impl func() (any, error))
	// CapabilitiesOf, when set, adds capabilities found on the configured
	// implementation (e.g. an optional interface it implements).
	CapabilitiesOf func(impl io.Closer) []string
}

// CapabilitiesFor lists what a configured implementation can do: the
// definition's own capabilities, what the implementation says (Capable) and
// what CapabilitiesOf finds on it.
func (d Definition) CapabilitiesFor(impl io.Closer) []string {
	caps := append([]string(nil), d.Capabilities...)
	if c, ok := impl.(Capable); ok {
		caps = append(caps, c.Capabilities()...)
	}
	if d.CapabilitiesOf != nil {
		caps = append(caps, d.CapabilitiesOf(impl)...)
	}
	return caps
}

// Define builds the Definition of a plugin whose implementation is an I:
// factory makes it at Configure, register serves it on the kind's gRPC
// service. The kind packages call it from their Plugin functions.
func Define[I io.Closer](kind, name, version string,
	factory func(context.Context, Env) (I, error),
	register func(s *grpc.Server, impl func(context.Context) (I, error)),
) Definition {
	return Definition{
		Kind:    kind,
		Name:    name,
		Version: version,
		New: func(ctx context.Context, env Env) (io.Closer, error) {
			return factory(ctx, env)
		},
		Register: func(s *grpc.Server, impl func() (any, error)) {
			register(s, func(context.Context) (I, error) {
				v, err := impl()
				if err != nil {
					var none I
					return none, err
				}
				return v.(I), nil
			})
		},
	}
}

// Capable is implemented by an implementation whose capabilities depend on
// its config or its host.
type Capable interface {
	Capabilities() []string
}

// grpcPlugin is the go-plugin glue of the plugin side: it registers Base and
// the kind's service (sdk/host has the host side's).
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	p.register(s)
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("plugin side cannot dial")
}
