// Command keel is keel's admin CLI. It talks to keeld over its API socket.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// defaultAddress is keeld's socket with the default config.
const defaultAddress = "/run/keel/keel.sock"

// globals are the flags every command shares.
type globals struct {
	address   string
	namespace string
	format    string
	quiet     bool
	lease     string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	var ee exitCodeError
	switch {
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(os.Stderr, "keel: %v\n", ee.err)
		}
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintf(os.Stderr, "keel: %v\n", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "keel",
		Short:         "keel's admin CLI",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.lease != "" {
				cmd.SetContext(client.WithLease(cmd.Context(), g.lease))
			}
			switch g.format {
			case "table", "json":
				return nil
			}
			return fmt.Errorf("--format must be table or json, not %q: %w", g.format, errdefs.ErrInvalidArgument)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.address, "address", envOr("KEEL_ADDRESS", defaultAddress), "keeld's socket (env KEEL_ADDRESS)")
	f.StringVarP(&g.namespace, "namespace", "n", envOr("KEEL_NAMESPACE", keelv1.DefaultNamespace), "namespace (env KEEL_NAMESPACE)")
	f.StringVar(&g.format, "format", "table", "output format: table or json")
	f.StringVar(&g.lease, "lease", os.Getenv("KEEL_LEASE"), "hold what the command makes in this lease (env KEEL_LEASE)")
	f.BoolVarP(&g.quiet, "quiet", "q", false, "print only ids")
	root.AddCommand(
		versionCommand(g),
		pluginsCommand(g),
		infoCommand(g),
		namespaceCommand(g),
		contentCommand(g),
		snapshotCommand(g),
		imageCommand(g),
		leaseCommand(g),
		gcCommand(g),
		checkCommand(g),
		conformanceCommand(g),
		containerCommand(g),
		taskCommand(g),
		runCommand(g),
		logsCommand(g),
		psCommand(g),
		networkCommand(g),
		eventsCommand(g),
	)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group fail on an argument
// that names none of its subcommands, as cobra does only for the root: a
// group without a Run would print its help and exit 0.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		err := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			err += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return fmt.Errorf("%s: %w", err, errdefs.ErrInvalidArgument)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// offlineAnnotation, on a command that has a way to run while keeld is
// stopped, is the hint that says how; it ends the message of a failed
// connection.
const offlineAnnotation = "keel.offline"

// withClient connects to keeld (--address, -n), runs fn with the client and
// closes it. It is the one place a command meets keeld's socket, and the
// one place a failed connection becomes the user's message: the client's
// error names the socket and the cause; a command that can run without
// keeld adds how (offlineAnnotation).
func (g *globals) withClient(cmd *cobra.Command, fn func(*client.Client) error) error {
	c, err := client.New(g.address, client.WithNamespace(g.namespace))
	if err != nil {
		if hint := cmd.Annotations[offlineAnnotation]; hint != "" && (errdefs.IsUnavailable(err) || errdefs.IsNotFound(err)) {
			return fmt.Errorf("%w; %s", err, hint)
		}
		return err
	}
	defer c.Close()
	return fn(c)
}

// connected is a command's RunE that runs fn connected to keeld
// (withClient).
func (g *globals) connected(fn func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return g.withClient(cmd, func(c *client.Client) error { return fn(cmd, c, args) })
	}
}

// table is what a listing command prints: a table for people, the values
// as JSON for scripts, or the ids alone with -q.
type table struct {
	header []string
	rows   [][]string
	ids    []string
	values any
}

func (g *globals) print(w io.Writer, t table) error {
	switch {
	case g.quiet:
		for _, id := range t.ids {
			fmt.Fprintln(w, id)
		}
		return nil
	case g.format == "json":
		return printJSON(w, t.values)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseLabels reads k=v arguments; "k=" (or "k") removes label k in an update.
func parseLabels(args []string) (map[string]string, []string) {
	labels := map[string]string{}
	var paths []string
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		paths = append(paths, "labels."+k)
		if v != "" {
			labels[k] = v
		}
	}
	return labels, paths
}

// formatLabels prints labels sorted, k=v comma-joined.
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}
