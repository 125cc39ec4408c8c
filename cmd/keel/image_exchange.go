package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/outfile"
)

// imageExchangeCommands are push, export, import, unpack, mount and unmount.
func imageExchangeCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		imagePushCommand(g),
		imageExportCommand(g),
		imageImportCommand(g),
		imageUnpackCommand(g),
		imageMountCommand(g),
		imageUnmountCommand(g),
	}
}

// pushReporter shows a push's progress: on a terminal, one bar of the bytes
// of all blobs and a line per blob as it ends; otherwise a line per blob as
// it starts and ends; nothing with -q.
type pushReporter struct {
	w      io.Writer
	quiet  bool
	bar    *progressbar.ProgressBar
	mu     sync.Mutex
	offset map[digest.Digest]int64
	total  int64
}

func newPushReporter(w io.Writer, quiet bool) *pushReporter {
	r := &pushReporter{w: w, quiet: quiet, offset: map[digest.Digest]int64{}}
	if f, ok := w.(*os.File); ok && !quiet && term.IsTerminal(int(f.Fd())) {
		r.bar = progressbar.NewOptions64(0,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("pushing"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionFullWidth(),
		)
	}
	return r
}

func pushDigest(d digest.Digest) string {
	if e := d.Encoded(); len(e) > 12 {
		return d.Algorithm().String() + ":" + e[:12]
	}
	return d.String()
}

func (r *pushReporter) report(p client.PushProgress) {
	if r.quiet {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, seen := r.offset[p.Desc.Digest]
	if !seen {
		r.total += p.Desc.Size
		if r.bar != nil {
			r.bar.ChangeMax64(r.total)
		} else {
			fmt.Fprintf(r.w, "pushing %s %s (%d bytes)\n", pushDigest(p.Desc.Digest), p.Desc.MediaType, p.Desc.Size)
		}
	}
	r.offset[p.Desc.Digest] = p.Offset
	if r.bar != nil {
		r.bar.Add64(p.Offset - prev)
	}
	if p.State == client.BlobPushing {
		return
	}
	line := fmt.Sprintf("%-7s %s %s", p.State, pushDigest(p.Desc.Digest), p.Desc.MediaType)
	if r.bar != nil {
		r.bar.Clear()
		fmt.Fprintln(r.w, line)
		return
	}
	fmt.Fprintln(r.w, line)
}

func (r *pushReporter) finish() {
	if r.bar != nil {
		r.bar.Finish()
	}
}

func imagePushCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "push REF [LOCAL]",
		Short: "Push an image to its registry: only what the registry lacks",
		Long: "Push the image record REF (or LOCAL) to REF's registry through keeld's resolver plugin:\n" +
			"layers and configs first, manifests last, skipping what the registry holds already.",
		Args: cobra.RangeArgs(1, 2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resolverName, _ := cmd.Flags().GetString("resolver")
			rep := newPushReporter(cmd.ErrOrStderr(), g.quiet)
			opts := []client.PushOpt{client.WithPushResolver(resolverName), client.WithPushProgress(rep.report)}
			if len(args) == 2 {
				opts = append(opts, client.WithPushImage(args[1]))
			}
			err := c.Push(cmd.Context(), args[0], opts...)
			rep.finish()
			if err != nil {
				return err
			}
			if !g.quiet {
				fmt.Fprintf(cmd.OutOrStdout(), "pushed %s\n", args[0])
			}
			return nil
		}),
	}
}

func imageExportCommand(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "export FILE REF...",
		Short: "Write images to an OCI image layout tar (FILE - for stdout)",
		Long: "Write the images REF... to FILE as an OCI image layout tar; - is stdout.\n" +
			"A regular FILE is written to a temporary file renamed over it at the end, so a failed export\n" +
			"leaves an existing FILE as it was. A symlink is followed (its target is written); a device or\n" +
			"FIFO is written through, never replaced; a directory is refused.",
		Args: cobra.MinimumNArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var opts []client.ExportOpt
			if all {
				opts = append(opts, client.WithExportAllPlatforms())
			}
			out, err := outfile.Create(args[0], cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if err := c.Export(cmd.Context(), out, args[1:], opts...); err != nil {
				out.Abort()
				return err
			}
			return out.Commit()
		}),
	}
	cmd.Flags().BoolVar(&all, "all-platforms", false, "fail unless every platform of an index is stored (default: export the index as stored)")
	return cmd
}

func imageImportCommand(g *globals) *cobra.Command {
	var all, noUnpack bool
	var base, snapshotter string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import images from an OCI image layout tar or a `docker save` tar (FILE - for stdin) and unpack them",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			opts := []client.ImportOpt{client.WithImportBaseName(base)}
			if all {
				opts = append(opts, client.WithImportAllPlatforms())
			}
			if !noUnpack {
				opts = append(opts, client.WithImportUnpack(snapshotter))
			}
			imgs, err := c.Import(cmd.Context(), r, opts...)
			if err != nil {
				return err
			}
			t := table{header: []string{"NAME", "DIGEST", "MEDIA TYPE"}, values: imgs}
			for _, img := range imgs {
				t.rows = append(t.rows, []string{img.Name, img.Target.Digest.String(), img.Target.MediaType})
				t.ids = append(t.ids, img.Name)
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
	cmd.Flags().BoolVar(&all, "all-platforms", false, "keep every platform of an index (default: keeld's platform only)")
	cmd.Flags().StringVar(&base, "base-name", "", "name images the archive leaves unnamed NAME@<digest> (default import)")
	cmd.Flags().BoolVar(&noUnpack, "no-unpack", false, "store the images only (keel image unpack, or keel run, unpacks them later)")
	cmd.Flags().StringVar(&snapshotter, "snapshotter", "", "snapshotter to unpack into (default: keeld's default_snapshotter)")
	return cmd
}

func imageUnpackCommand(g *globals) *cobra.Command {
	var platform, snapshotter string
	cmd := &cobra.Command{
		Use:   "unpack REF",
		Short: "Unpack a stored image's layers into a snapshotter (what is there already is kept)",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			u, err := c.UnpackImage(cmd.Context(), args[0], snapshotter, platform)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case g.format == "json":
				return printJSON(out, u)
			case g.quiet:
				_, err = fmt.Fprintln(out, u.ChainID)
			default:
				_, err = fmt.Fprintf(out, "unpacked %s on %s: %d layers applied, %d there already, snapshot %s\n",
					u.Image.Name, u.Snapshotter, u.Applied, u.Skipped, u.ChainID)
			}
			return err
		}),
	}
	cmd.Flags().StringVar(&platform, "platform", "", "manifest of an index to unpack, os/arch[/variant] (default: keeld's)")
	cmd.Flags().StringVar(&snapshotter, "snapshotter", "", "snapshotter to unpack into (default: keeld's default_snapshotter)")
	return cmd
}

func imageMountCommand(g *globals) *cobra.Command {
	var platform, snapshotter string
	cmd := &cobra.Command{
		Use:   "mount REF DIR",
		Short: "Mount a read-only view of an unpacked image's root filesystem on DIR",
		Args:  cobra.ExactArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.MountImage(cmd.Context(), args[0], args[1],
				client.WithMountPlatform(platform), client.WithMountSnapshotter(snapshotter))
		}),
	}
	cmd.Flags().StringVar(&platform, "platform", "", "manifest of an index to mount, os/arch[/variant] (default: keeld's)")
	cmd.Flags().StringVar(&snapshotter, "snapshotter", "", "snapshotter the image is unpacked on (default: keeld's default)")
	return cmd
}

func imageUnmountCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unmount DIR",
		Short: "Unmount an image mounted by `keel image mount` and remove its view",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.UnmountImage(cmd.Context(), args[0])
		}),
	}
}
