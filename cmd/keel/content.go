package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func contentCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "content", Short: "Manage blobs in the content store"}
	cmd.AddCommand(contentLsCommand(g), contentGetCommand(g), contentIngestCommand(g), contentRmCommand(g),
		contentInfoCommand(g), contentLabelCommand(g), contentIngestsCommand(g))
	return cmd
}

func contentLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List blobs (filters: digest, size, labels.KEY; e.g. labels.\"a\"==b)",
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var infos []content.Info
			err := c.ContentStore().Walk(cmd.Context(), func(info content.Info) error {
				infos = append(infos, info)
				return nil
			}, args...)
			if err != nil {
				return err
			}
			t := table{header: []string{"DIGEST", "SIZE", "AGE", "LABELS"}, values: infos}
			for _, info := range infos {
				t.ids = append(t.ids, info.Digest.String())
				t.rows = append(t.rows, []string{info.Digest.String(), strconv.FormatInt(info.Size, 10),
					age(info.CreatedAt), formatLabels(info.Labels)})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func contentGetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get DIGEST",
		Short: "Write a blob to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dgst, err := parseDigest(args[0])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(c *client.Client) error {
				cs := c.ContentStore()
				info, err := cs.Info(cmd.Context(), dgst)
				if err != nil {
					return err
				}
				ra, err := cs.ReaderAt(cmd.Context(), ocispec.Descriptor{Digest: dgst, Size: info.Size})
				if err != nil {
					return err
				}
				defer ra.Close()
				w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<20)
				if _, err := io.Copy(w, content.NewReader(ra)); err != nil {
					return err
				}
				return w.Flush()
			})
		},
	}
}

func contentRmCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm DIGEST...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove blobs from the namespace",
		Args:    cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, a := range args {
				dgst, err := parseDigest(a)
				if err != nil {
					return err
				}
				if err := c.ContentStore().Delete(cmd.Context(), dgst); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

func contentInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info DIGEST",
		Short: "Show a blob's size, times and labels",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dgst, err := parseDigest(args[0])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(c *client.Client) error {
				info, err := c.ContentStore().Info(cmd.Context(), dgst)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), info)
			})
		},
	}
}

func contentLabelCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "label DIGEST KEY=VALUE...",
		Short: "Set (KEY=VALUE) or remove (KEY=) labels of a blob",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dgst, err := parseDigest(args[0])
			if err != nil {
				return err
			}
			labels, paths := parseLabels(args[1:])
			return g.withClient(cmd, func(c *client.Client) error {
				info, err := c.ContentStore().Update(cmd.Context(), content.Info{Digest: dgst, Labels: labels}, paths...)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), formatLabels(info.Labels))
				return nil
			})
		},
	}
}

func contentIngestCommand(g *globals) *cobra.Command {
	var expected string
	var size int64
	cmd := &cobra.Command{
		Use:   "ingest REF",
		Short: "Store stdin as a blob; an interrupted ingest of REF resumes",
		Long: "ingest reads a blob from stdin under the ingest REF and commits it, printing its digest.\n" +
			"If REF holds a partial ingest, the bytes already stored are skipped from stdin.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var desc ocispec.Descriptor
			if expected != "" {
				d, err := parseDigest(expected)
				if err != nil {
					return err
				}
				desc.Digest = d
			}
			desc.Size = size
			return g.withClient(cmd, func(c *client.Client) error {
				dgst, err := ingest(cmd.Context(), c.ContentStore(), args[0], bufio.NewReaderSize(cmd.InOrStdin(), 1<<20), desc)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), dgst)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&expected, "expected-digest", "", "refuse the blob unless it has this digest")
	cmd.Flags().Int64Var(&size, "expected-size", 0, "refuse the blob unless it has this size")
	return cmd
}

// ingest writes r under ref, resuming a partial ingest, and commits it.
func ingest(ctx context.Context, cs content.Store, ref string, r io.Reader, desc ocispec.Descriptor) (digest.Digest, error) {
	w, err := cs.Writer(ctx, content.WithRef(ref), content.WithDescriptor(desc))
	if err != nil {
		return "", err
	}
	defer w.Close()
	st, err := w.Status()
	if err != nil {
		return "", err
	}
	if st.Offset > 0 {
		if _, err := io.CopyN(io.Discard, r, st.Offset); err != nil {
			return "", fmt.Errorf("skip the %d bytes ref %q already holds: %w", st.Offset, ref, err)
		}
	}
	if _, err := io.CopyBuffer(w, r, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return w.Digest(), nil
		}
		return "", err
	}
	return w.Digest(), nil
}

// contentIngestsCommand is the group over ingests in progress.
func contentIngestsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ingests", Short: "Inspect and abort ingests in progress"}
	cmd.AddCommand(contentIngestsLsCommand(g), contentIngestsAbortCommand(g))
	return cmd
}

func contentIngestsLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls [FILTER...]",
		Aliases: []string{"list"},
		Short:   "List ingests in progress",
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			sts, err := c.ContentStore().ListStatuses(cmd.Context(), args...)
			if err != nil {
				return err
			}
			t := table{header: []string{"REF", "OFFSET", "TOTAL", "EXPECTED", "STARTED"}, values: sts}
			for _, st := range sts {
				t.ids = append(t.ids, st.Ref)
				t.rows = append(t.rows, []string{st.Ref, strconv.FormatInt(st.Offset, 10),
					strconv.FormatInt(st.Total, 10), orDash(st.Expected.String()), age(st.StartedAt)})
			}
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func contentIngestsAbortCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "abort REF...",
		Short: "Abort ingests and drop their data",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, ref := range args {
				if err := c.ContentStore().Abort(cmd.Context(), ref); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("digest %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return d, nil
}

// age prints how long ago t was, as people read it.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
