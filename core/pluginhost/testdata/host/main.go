// Command host is a test program: a minimal keeld that runs one snapshotter
// plugin with pluginhost, prints its status as JSON on stdout and waits to be
// killed.
//
//	host PLUGIN ROOT STATE
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/core/pluginhost"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: host PLUGIN ROOT STATE")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	logger := hclog.New(&hclog.LoggerOptions{Name: "host", Output: os.Stderr, Level: hclog.Debug})
	h := pluginhost.New(logger)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.Start(ctx, []pluginhost.Spec{{
		Kind: "snapshotter", Name: "mem", Path: os.Args[1], Root: os.Args[2], State: os.Args[3],
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "host:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(h.Plugins()); err != nil {
		os.Exit(1)
	}
	<-sig
	_ = h.Stop(context.Background())
}
