package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/keel-runtime/keel/client"
)

// Pull an image for the host's platform and unpack it into keeld's default
// snapshotter, printing each layer as it is unpacked.
func ExampleClient_Pull() {
	c, err := client.New("/run/keel/keel.sock", client.WithNamespace("default"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	img, err := c.Pull(context.Background(), "registry.example.com/library/busybox:1.36",
		client.WithPullUnpack,
		client.WithPullProgress(func(p client.PullProgress) {
			if l := p.Layer; l != nil {
				fmt.Println("unpacked", l.Desc.Digest, "as", l.ChainID)
			}
		}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(img.Name, img.Target.Digest)
}

// Pull the arm64 image of a multi-platform index into the overlay
// snapshotter (arm64 also takes arm64/v8).
func ExampleWithPlatform() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Pull(context.Background(), "registry.example.com/app:v2",
		client.WithPlatform("linux/arm64"), client.WithPullUnpack, client.WithPullSnapshotter("overlay"))
	if err != nil {
		log.Fatal(err)
	}
}

// Fetch every platform of an index without unpacking anything, e.g. to
// export or push it elsewhere.
func ExampleWithAllPlatforms() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Pull(context.Background(), "registry.example.com/app:v2", client.WithAllPlatforms); err != nil {
		log.Fatal(err)
	}
}

// Push an image record to its registry, printing each blob as it ends.
func ExampleClient_Push() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Push(context.Background(), "registry.example.com/app:v1",
		client.WithPushProgress(func(p client.PushProgress) {
			if p.State != client.BlobPushing {
				fmt.Println(p.State, p.Desc.Digest)
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
