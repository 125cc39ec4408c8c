// Command wrongkind is a test plugin that says it is a content plugin.
package main

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/keel-runtime/keel/sdk"
)

type nop struct{}

func (nop) Close() error { return nil }

func main() {
	sdk.Serve(sdk.Definition{
		Kind:     sdk.KindContent,
		Name:     "wrongkind",
		Version:  "0.0.1",
		New:      func(context.Context, sdk.Env) (io.Closer, error) { return nop{}, nil },
		Register: func(*grpc.Server, func() (any, error)) {},
	})
}
