package oci_test

import (
	"context"
	"fmt"
	"log"

	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// GenerateSpec gives every spec Docker's default seccomp profile, made for
// its final capabilities whatever the options' order: with CAP_SYS_ADMIN
// added, unshare is allowed.
func ExampleGenerateSpec_seccomp() {
	ctx := context.Background()
	s, err := oci.GenerateSpec(ctx,
		oci.WithProcessArgs("sh"),
		oci.WithCapabilities([]string{"SYS_ADMIN"}, []string{"ALL"}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Process.Capabilities.Bounding, s.Linux.Seccomp.DefaultAction)

	s, err = oci.GenerateSpec(ctx, oci.WithProcessArgs("sh"), oci.WithSeccompUnconfined)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Linux.Seccomp == nil)
	// Output:
	// [CAP_SYS_ADMIN] SCMP_ACT_ERRNO
	// true
}

// A spec built by hand (for client.WithSpec) gets the default profile by
// calling WithDefaultSeccomp after its last capability change.
func ExampleWithDefaultSeccomp() {
	ctx := context.Background()
	s := runtime.DefaultSpec()
	s.Process.Args = []string{"sh"}
	if err := oci.WithCapabilities([]string{"NET_ADMIN"}, nil)(ctx, s); err != nil {
		log.Fatal(err)
	}
	if err := oci.WithDefaultSeccomp(ctx, s); err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Linux.Seccomp.DefaultAction)
	// Output: SCMP_ACT_ERRNO
}
