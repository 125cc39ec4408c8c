package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keel-runtime/keel/client"
)

func imagePullCommand(g *globals) *cobra.Command {
	var platform, snapshotter string
	var allPlatforms, noUnpack bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry and unpack it into a snapshotter",
		Long: `Pull fetches an image through keeld's resolver plugin: the manifest of the
platform asked (the host's by default), its config and layers, and unpacks the
layers into the snapshotter. Blobs already stored are not fetched again; an
interrupted pull resumes where it stopped. On a terminal each blob gets a
progress bar; otherwise one line per blob state. -q prints only the digest.`,
		Args: cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resolverName, _ := cmd.Flags().GetString("resolver")
			opts := []client.PullOpt{client.WithPlatform(platform), client.WithPullSnapshotter(snapshotter), client.WithPullResolver(resolverName)}
			if allPlatforms {
				opts = append(opts, client.WithAllPlatforms)
			}
			if !noUnpack {
				opts = append(opts, client.WithPullUnpack)
			}
			out := cmd.OutOrStdout()
			var view pullView
			switch {
			case g.quiet || g.format == "json":
			case isTerminalWriter(out):
				view = newBarView(out)
			default:
				view = lineView{w: out}
			}
			if view != nil {
				opts = append(opts, client.WithPullProgress(view.update))
			}
			start := time.Now()
			img, err := c.Pull(cmd.Context(), args[0], opts...)
			if view != nil {
				view.close()
			}
			if err != nil {
				return err
			}
			switch {
			case g.format == "json":
				return printJSON(out, img)
			case g.quiet:
				_, err = fmt.Fprintln(out, img.Target.Digest)
			default:
				_, err = fmt.Fprintf(out, "pulled %s %s in %s\n", img.Name, img.Target.Digest, time.Since(start).Round(time.Millisecond))
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&platform, "platform", "", "platform os/arch[/variant] to pull (default: the host's)")
	f.BoolVar(&allPlatforms, "all-platforms", false, "fetch every platform of an index (only the one picked is unpacked)")
	f.StringVar(&snapshotter, "snapshotter", "", "snapshotter to unpack into (default: keeld's default_snapshotter)")
	f.BoolVar(&noUnpack, "no-unpack", false, "fetch the content only")
	return cmd
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// pullView shows a pull's progress.
type pullView interface {
	update(client.PullProgress)
	close()
}

func shortDigest(d digest.Digest) string {
	if e := d.Encoded(); len(e) >= 12 {
		return e[:12]
	}
	return d.String()
}

// lineView prints a line per blob state change and per layer, for logs
// and pipes.
type lineView struct{ w io.Writer }

func (v lineView) update(p client.PullProgress) {
	switch {
	case p.Blob != nil:
		b := p.Blob
		switch b.State {
		case client.BlobDownloading:
			if b.Offset != b.ResumedFrom {
				return
			}
			if b.ResumedFrom > 0 {
				fmt.Fprintf(v.w, "%s %-8s resuming at %d of %d bytes\n", shortDigest(b.Desc.Digest), b.Role, b.ResumedFrom, b.Desc.Size)
				return
			}
			fmt.Fprintf(v.w, "%s %-8s downloading %d bytes\n", shortDigest(b.Desc.Digest), b.Role, b.Desc.Size)
		case client.BlobDone, client.BlobExists:
			fmt.Fprintf(v.w, "%s %-8s %s\n", shortDigest(b.Desc.Digest), b.Role, b.State)
		}
	case p.Layer != nil:
		printLayer(v.w, p.Layer)
	}
}

func (lineView) close() {}

func printLayer(w io.Writer, l *client.PullLayer) {
	what := "unpacked"
	if l.Skipped {
		what = "present "
	}
	fmt.Fprintf(w, "%s layer %d %s: %s snapshot %s\n", shortDigest(l.Desc.Digest), l.Index, what, l.Snapshotter, shortDigest(l.ChainID))
}

// barView draws one progress bar per blob (bytes and rate), redrawn in
// place, with the layer lines printed above them.
type barView struct {
	w     io.Writer
	order []digest.Digest
	bars  map[digest.Digest]*progressbar.ProgressBar
	drawn int // lines of bars on screen
}

func newBarView(w io.Writer) *barView {
	return &barView{w: w, bars: map[digest.Digest]*progressbar.ProgressBar{}}
}

func (v *barView) bar(b *client.PullBlob) *progressbar.ProgressBar {
	bar, ok := v.bars[b.Desc.Digest]
	if !ok {
		bar = progressbar.NewOptions64(b.Desc.Size,
			progressbar.OptionSetWriter(io.Discard),
			progressbar.OptionSetDescription(fmt.Sprintf("%s %-8s", shortDigest(b.Desc.Digest), b.Role)),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(0),
			progressbar.OptionSetPredictTime(false),
		)
		v.bars[b.Desc.Digest] = bar
		v.order = append(v.order, b.Desc.Digest)
	}
	return bar
}

func (v *barView) update(p client.PullProgress) {
	switch {
	case p.Blob != nil:
		b := p.Blob
		bar := v.bar(b)
		switch b.State {
		case client.BlobWaiting:
			bar.Describe(fmt.Sprintf("%s %-8s waiting", shortDigest(b.Desc.Digest), b.Role))
		case client.BlobExists:
			bar.Describe(fmt.Sprintf("%s %-8s exists ", shortDigest(b.Desc.Digest), b.Role))
			bar.Set64(b.Desc.Size)
		default:
			bar.Describe(fmt.Sprintf("%s %-8s", shortDigest(b.Desc.Digest), b.Role))
			bar.Set64(b.Offset)
		}
		v.redraw(nil)
	case p.Layer != nil:
		v.redraw(p.Layer)
	}
}

// redraw moves up over the bars, prints a layer line when given (it
// stays above), then the bars again.
func (v *barView) redraw(layer *client.PullLayer) {
	var sb strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dF", v.drawn)
	}
	if layer != nil {
		sb.WriteString("\x1b[2K")
		printLayer(&sb, layer)
	}
	for _, d := range v.order {
		line := strings.TrimLeft(v.bars[d].String(), "\r")
		fmt.Fprintf(&sb, "\x1b[2K%s\n", strings.TrimRight(line, " "))
	}
	v.drawn = len(v.order)
	io.WriteString(v.w, sb.String())
}

func (v *barView) close() {}
