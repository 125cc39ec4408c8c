package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Media types of the image graph, OCI's and Docker's.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerIndex    = "application/vnd.docker.distribution.manifest.list.v2+json"
	// maxManifestSize bounds what is read of a manifest, index or config.
	maxManifestSize = 4 << 20
	// maxIndexDepth bounds nested indexes.
	maxIndexDepth = 4
)

func isIndex(mt string) bool { return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerIndex }
func isManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest
}

// imageRecordCommands are the image subcommands over keeld's image records.
func imageRecordCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{imageLsCommand(g), imageInspectCommand(g), imageTagCommand(g), imageRmCommand(g)}
}

// imageRow is what `image ls` prints as JSON.
type imageRow struct {
	client.Image
	// Size is the bytes of the graph the target reaches, -1 when content
	// is missing; Platforms nil then too.
	Size      int64    `json:"size"`
	Platforms []string `json:"platforms"`
}

func imageLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List image records (filters: name, target.digest, target.mediatype, labels.KEY)",
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ctx := cmd.Context()
			imgs, err := c.ListImages(ctx, args...)
			if err != nil {
				return err
			}
			cs := c.ContentStore()
			t := table{header: []string{"NAME", "DIGEST", "SIZE", "PLATFORMS", "CREATED"}}
			rows := []imageRow{}
			for _, img := range imgs {
				r := imageRow{Image: img, Size: -1}
				size, plats, err := imageSummary(ctx, cs, img.Target)
				if err == nil {
					r.Size, r.Platforms = size, plats
				} else if !errdefs.IsNotFound(err) {
					return fmt.Errorf("image %s: %w", img.Name, err)
				}
				sizeCol, platCol := "-", "-"
				if r.Size >= 0 {
					sizeCol = humanSize(r.Size)
					if len(r.Platforms) > 0 {
						platCol = strings.Join(r.Platforms, ",")
					}
				}
				rows = append(rows, r)
				t.ids = append(t.ids, img.Name)
				t.rows = append(t.rows, []string{img.Name, img.Target.Digest.String(), sizeCol, platCol, age(img.CreatedAt)})
			}
			t.values = rows
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func imageInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print an image's record, manifests, configs and layers as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			img, err := c.GetImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := inspected{Image: img}
			if err := inspectGraph(cmd.Context(), c.ContentStore(), img.Target, &out, 0); err != nil {
				return fmt.Errorf("image %s: %w", img.Name, err)
			}
			return printJSON(cmd.OutOrStdout(), out)
		}),
	}
}

func imageTagCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SRC DST",
		Short: "Record image DST with SRC's target and labels",
		Args:  cobra.ExactArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			img, err := c.TagImage(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), img.Name)
			return nil
		}),
	}
}

func imageRmCommand(g *globals) *cobra.Command {
	var sync bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove image records; garbage collection frees what nothing else holds",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for i, name := range args {
				var opts []client.DeleteOpt
				if sync && i == len(args)-1 {
					opts = append(opts, client.WithSyncDelete())
				}
				if err := c.DeleteImage(cmd.Context(), name, opts...); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&sync, "sync", false, "wait for garbage collection to free the content")
	return cmd
}

// readJSONBlob reads and decodes a small blob of the graph.
func readJSONBlob(ctx context.Context, cs content.Store, desc ocispec.Descriptor, v any) (json.RawMessage, error) {
	if desc.Size > maxManifestSize {
		return nil, fmt.Errorf("blob %s: %d bytes, more than %d: %w", desc.Digest, desc.Size, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	data, err := io.ReadAll(io.LimitReader(content.NewReader(ra), maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(data) != desc.Digest {
		return nil, fmt.Errorf("blob %s: content does not match its digest: %w", desc.Digest, errdefs.ErrDataLoss)
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fmt.Errorf("blob %s: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
		}
	}
	return data, nil
}

// imageSummary is the size of what target reaches (manifests, configs,
// layers, each counted once, by their descriptors) and its platforms.
// NotFound when a manifest or index is not in the content store.
func imageSummary(ctx context.Context, cs content.Store, target ocispec.Descriptor) (int64, []string, error) {
	seen := map[digest.Digest]bool{}
	var size int64
	add := func(d ocispec.Descriptor) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			size += d.Size
		}
	}
	var plats []string
	var walk func(desc ocispec.Descriptor, plat *ocispec.Platform, depth int) error
	walk = func(desc ocispec.Descriptor, plat *ocispec.Platform, depth int) error {
		add(desc)
		switch {
		case isIndex(desc.MediaType) && depth < maxIndexDepth:
			var idx ocispec.Index
			if _, err := readJSONBlob(ctx, cs, desc, &idx); err != nil {
				return err
			}
			for _, m := range idx.Manifests {
				if !isIndex(m.MediaType) && !isManifest(m.MediaType) {
					add(m) // e.g. an attestation blob
					continue
				}
				if err := walk(m, m.Platform, depth+1); err != nil {
					return err
				}
			}
		case isManifest(desc.MediaType):
			var m ocispec.Manifest
			if _, err := readJSONBlob(ctx, cs, desc, &m); err != nil {
				return err
			}
			add(m.Config)
			for _, l := range m.Layers {
				add(l)
			}
			if plat == nil {
				var cfg ocispec.Image
				if _, err := readJSONBlob(ctx, cs, m.Config, &cfg); err == nil {
					plat = &cfg.Platform
				}
			}
			if plat != nil && plat.OS != "" && plat.OS != "unknown" {
				p := plat.OS + "/" + plat.Architecture
				if plat.Variant != "" {
					p += "/" + plat.Variant
				}
				if !slices.Contains(plats, p) {
					plats = append(plats, p)
				}
			}
		}
		return nil
	}
	if err := walk(target, nil, 0); err != nil {
		return 0, nil, err
	}
	return size, plats, nil
}

// inspected is what `image inspect` prints.
type inspected struct {
	client.Image
	Index     json.RawMessage     `json:"index,omitempty"`
	Manifests []inspectedManifest `json:"manifests"`
}

type inspectedManifest struct {
	Descriptor ocispec.Descriptor   `json:"descriptor"`
	Manifest   json.RawMessage      `json:"manifest,omitempty"`
	Config     json.RawMessage      `json:"config,omitempty"`
	Layers     []ocispec.Descriptor `json:"layers,omitempty"`
	// Error says why the manifest or config could not be read.
	Error string `json:"error,omitempty"`
}

func inspectGraph(ctx context.Context, cs content.Store, desc ocispec.Descriptor, out *inspected, depth int) error {
	switch {
	case isIndex(desc.MediaType) && depth < maxIndexDepth:
		var idx ocispec.Index
		raw, err := readJSONBlob(ctx, cs, desc, &idx)
		if err != nil {
			return err
		}
		if out.Index == nil {
			out.Index = raw
		}
		for _, m := range idx.Manifests {
			if isIndex(m.MediaType) || isManifest(m.MediaType) {
				if err := inspectGraph(ctx, cs, m, out, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	case isManifest(desc.MediaType):
		im := inspectedManifest{Descriptor: desc}
		var m ocispec.Manifest
		raw, err := readJSONBlob(ctx, cs, desc, &m)
		if err != nil {
			im.Error = err.Error()
		} else {
			im.Manifest, im.Layers = raw, m.Layers
			if im.Config, err = readJSONBlob(ctx, cs, m.Config, nil); err != nil {
				im.Error = "config: " + err.Error()
			}
		}
		out.Manifests = append(out.Manifests, im)
		return nil
	}
	return fmt.Errorf("target media type %q is neither an index nor a manifest: %w", desc.MediaType, errdefs.ErrInvalidArgument)
}

// humanSize prints bytes in binary units.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatTime prints t in RFC 3339, "-" for none.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}
