package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/keel-runtime/keel/client"
)

// Push an image record to its registry, printing each blob as it ends.
func ExampleClient_Push() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Push(context.Background(), "registry.example.com/app:v1",
		client.WithPushProgress(func(p client.PushProgress) {
			if p.Status != client.PushPushing {
				fmt.Println(p.Status, p.Desc.Digest)
			}
		}))
	if err != nil {
		log.Fatal(err)
	}
}

// Export two images to an OCI image layout tar.
func ExampleClient_Export() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	f, err := os.Create("images.tar")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if err := c.Export(context.Background(), f, []string{"example.com/a:v1", "example.com/b:v1"}); err != nil {
		log.Fatal(err)
	}
}

// Import a `docker save` or OCI layout tar, keeping every platform.
func ExampleClient_Import() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	f, err := os.Open("images.tar")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	imgs, err := c.Import(context.Background(), f, client.WithImportAllPlatforms())
	if err != nil {
		log.Fatal(err)
	}
	for _, img := range imgs {
		fmt.Println(img.Name, img.Target.Digest)
	}
}

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
