// A snapshotter plugin written the way a third party writes one: from
// docs/writing-a-plugin.md alone, in a module of its own that requires only
// keel's SDK. keel's tests build it and run `keel conformance` on it.
module example.com/keel-snapshotter-layered

go 1.26.0

// A real plugin author requires a tagged SDK (go get
// github.com/keel-runtime/keel/sdk@vX.Y.Z, tags sdk/vX.Y.Z) and has no
// replace. This module lives inside keel's repository and tests the SDK as it
// is at this commit, so it points the requirement at ../../../sdk, as the
// guide's "Getting set up" does for a clone.
require github.com/keel-runtime/keel/sdk v0.0.0

require (
	github.com/containerd/errdefs v1.0.0 // indirect
	github.com/fatih/color v1.13.0 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/hashicorp/go-hclog v1.6.3 // indirect
	github.com/hashicorp/go-plugin v1.8.0 // indirect
	github.com/hashicorp/yamux v0.1.2 // indirect
	github.com/mattn/go-colorable v0.1.12 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/moby/sys/mountinfo v0.7.2 // indirect
	github.com/oklog/run v1.1.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260825221802-da73d73af1c5 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/keel-runtime/keel/sdk => ../../../sdk
