package client_test

import (
	"context"
	"log"

	"github.com/keel-runtime/keel/client"
)

// Mount a read-only view of an unpacked image (as root, on keeld's host),
// then unmount it.
func ExampleClient_MountImage() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.MountImage(ctx, "example.com/app:v1", "/mnt/app", client.WithMountSnapshotter("overlay")); err != nil {
		log.Fatal(err) // FailedPrecondition when the image is not unpacked there
	}
	defer c.UnmountImage(ctx, "/mnt/app")
}
