package errdefs_test

import (
	"fmt"

	"google.golang.org/grpc/status"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Classify an error where it happens by wrapping its class with %w; the
// class survives more wrapping and a gRPC hop (ToGRPC on the server side,
// FromGRPC on the client's), so the far side tests it with the same
// predicate, never with the message.
func Example() {
	err := fmt.Errorf("snapshot %q: %w", "layer-3", errdefs.ErrNotFound)
	err = fmt.Errorf("prepare: %w", err)
	fmt.Println(errdefs.IsNotFound(err), errdefs.IsAlreadyExists(err))

	wire := errdefs.ToGRPC(err)
	fmt.Println(status.Code(wire))

	back := errdefs.FromGRPC(wire)
	fmt.Println(errdefs.IsNotFound(back))
	fmt.Println(back)
	// Output:
	// true false
	// NotFound
	// true
	// prepare: snapshot "layer-3": not found
}
