package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Connect to keeld's API socket, with the namespace every call is scoped
// to unless its context names another.
func ExampleNew() {
	c, err := client.New("/run/keel/keel.sock", client.WithNamespace("ci"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	v, err := c.Version(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keeld", v.Version)
}

// Run a container to its end: pull the image, make the container (a
// snapshot of the image for its rootfs, a spec from the image's config),
// create its task with this process's stdio, wait for it (before Start, so
// no exit is missed), start it, and clean up.
func ExampleClient_NewContainer() {
	ctx := context.Background()
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	img, err := c.Pull(ctx, "registry.example.com/library/busybox:1.36", client.WithPullUnpack)
	if err != nil {
		log.Fatal(err)
	}
	ct, err := c.NewContainer(ctx, "hello",
		client.WithImage(img),
		client.WithNewSnapshot("hello", img),
		client.WithNewSpec(oci.WithImageConfig(c.LocalImage(img)), oci.WithProcessArgs("echo", "hello")))
	if err != nil {
		log.Fatal(err)
	}
	defer ct.Delete(ctx)

	task, err := ct.NewTask(ctx, cio.NewCreator(cio.WithStdio))
	if err != nil {
		log.Fatal(err)
	}
	defer task.Delete(ctx)
	exited, err := task.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		log.Fatal(err)
	}
	code, _, err := (<-exited).Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit status", code)
}

// List the namespace's images, all of them or those a filter selects.
func ExampleClient_ListImages() {
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	imgs, err := c.ListImages(context.Background(), `name~=^registry.example.com/`)
	if err != nil {
		log.Fatal(err)
	}
	for _, img := range imgs {
		fmt.Println(img.Name, img.Target.Digest, img.Target.Size)
	}
}

// Namespaces isolate tenants. A call's context may name the namespace
// for that call alone, whatever the client's own.
func ExampleWithNamespaceContext() {
	ctx := context.Background()
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Namespaces().Create(ctx, "team-a", map[string]string{"owner": "ops"}); err != nil && !errdefs.IsAlreadyExists(err) {
		log.Fatal(err)
	}
	imgs, err := c.ListImages(client.WithNamespaceContext(ctx, "team-a"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(imgs), "images in team-a")
}

// A lease keeps what is written under it (content, snapshots) from garbage
// collection until the lease is deleted or expires, whether or not an
// image record refers to it yet.
func ExampleClient_CreateLease() {
	ctx := context.Background()
	c, err := client.New("/run/keel/keel.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.CreateLease(ctx, client.WithLeaseExpiration(time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	defer c.DeleteLease(ctx, lease.ID)
	ctx = client.WithLease(ctx, lease.ID)

	f, err := os.Open("image.tar")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f)
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.ListLeaseResources(ctx, lease.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(imgs), "images imported,", len(res), "resources held by", lease.ID)
}
