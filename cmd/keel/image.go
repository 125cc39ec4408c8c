package main

import (
	"encoding/json"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// imageCommand is the image group: registry operations through keeld's
// resolver plugin (pull, push and ls come with the images issue).
func imageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Aliases: []string{"images"}, Short: "Work with images and registries"}
	cmd.PersistentFlags().String("resolver", "", "resolver plugin name (default: keeld's only one)")
	cmd.AddCommand(imageResolveCommand(g))
	cmd.AddCommand(imageRecordCommands(g)...)
	cmd.AddCommand(imagePullCommand(g))
	cmd.AddCommand(imageExchangeCommands(g)...)
	return cmd
}

// resolved is what `keel image resolve` prints as JSON.
type resolved struct {
	Name       string             `json:"name"`
	Descriptor ocispec.Descriptor `json:"descriptor"`
	Attempts   []resolver.Attempt `json:"attempts,omitempty"`
}

func imageResolveCommand(g *globals) *cobra.Command {
	var explain bool
	cmd := &cobra.Command{
		Use:   "resolve [--explain] REF",
		Short: "Resolve an image reference to its canonical name and descriptor",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			name, _ := cmd.Flags().GetString("resolver")
			r := c.ResolverService(name)
			var (
				out resolved
				err error
			)
			if explain {
				out.Name, out.Descriptor, out.Attempts, err = resolver.Explain(cmd.Context(), r, args[0])
			} else {
				out.Name, out.Descriptor, err = r.Resolve(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.format == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if g.quiet {
				_, err := fmt.Fprintln(w, out.Descriptor.Digest)
				return err
			}
			fmt.Fprintf(w, "%s\n  %s\n  %s\n  %d bytes\n", out.Name, out.Descriptor.MediaType, out.Descriptor.Digest, out.Descriptor.Size)
			if explain {
				fmt.Fprintln(w, "hosts tried:")
				for i, a := range out.Attempts {
					mark := " "
					if a.Used {
						mark = "*"
					}
					fmt.Fprintf(w, "%s %d. %-8s %s\n      %s\n", mark, i+1, a.Role, a.Host, a.Reason)
				}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&explain, "explain", false, "list the hosts tried, in order, and why each was used or skipped")
	return cmd
}
