package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// logNone, as --log, keeps no log.
const logNone = "none"

// logOptValue is --log-opt: max-size=SIZE,max-files=N, parsed as the flag
// is set so a mistake fails before anything is made.
type logOptValue struct {
	log  *cio.Log
	text []string
}

func (v *logOptValue) String() string { return strings.Join(v.text, ",") }
func (v *logOptValue) Type() string   { return "KEY=VALUE,..." }

func (v *logOptValue) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("log option %q: want KEY=VALUE: %w", kv, errdefs.ErrInvalidArgument)
		}
		switch k {
		case "max-size":
			n, err := units.RAMInBytes(val)
			if err != nil || n < 1 {
				return fmt.Errorf("log option max-size %q: want a size such as 10MiB: %w", val, errdefs.ErrInvalidArgument)
			}
			v.log.MaxSize = n
		case "max-files", "max-file":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return fmt.Errorf("log option %s %q: want a number of files, at least 1: %w", k, val, errdefs.ErrInvalidArgument)
			}
			v.log.MaxFiles = n
		default:
			return fmt.Errorf("log option %q: unknown (max-size, max-files): %w", k, errdefs.ErrInvalidArgument)
		}
	}
	v.text = append(v.text, s)
	return nil
}

// registerLogFlags adds --log and --log-opt, which set o.
func registerLogFlags(cmd *cobra.Command, o *taskIOFlags) {
	cmd.Flags().StringVar(&o.log, "log", "", "where the output is kept: by default the container's log (keel logs), "+
		"none, or FILE (stdout and stderr appended as they are, by the runtime)")
	cmd.Flags().Var(&logOptValue{log: &o.logOpts}, "log-opt", "the container's log rotation: max-size=SIZE,max-files=N (default: keeld's container_logs)")
}

// containerLogOpts are the creator options that keep the output in the
// container's log too, as o asks.
func (o taskIOFlags) containerLogOpts() []cio.Opt {
	if o.log != "" {
		return nil
	}
	return []cio.Opt{cio.WithLog(o.logOpts)}
}

// parseSince reads --since: an RFC 3339 time (or date), a Unix time, or a
// duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a negative duration: %w", s, errdefs.ErrInvalidArgument)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(0, int64(secs*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a time (2006-01-02T15:04:05Z), a Unix time or a duration (10m): %w", s, errdefs.ErrInvalidArgument)
}

func logsCommand(g *globals) *cobra.Command {
	var (
		follow     bool
		tail       string
		timestamps bool
		since      string
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--timestamps] [--since TIME|DURATION] ID",
		Short: "Print a container's log: its task's stdout to stdout, stderr to stderr",
		Long: "Print a container's log: the output of its task, kept by keeld (the runtime writes it, rotated)\n" +
			"until the container is deleted. With -f, follow it until the task exits.",
		Args: cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var opts []client.LogsOpt
			if follow {
				opts = append(opts, client.WithFollow)
			}
			if tail != "all" {
				n, err := strconv.ParseInt(tail, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("--tail %q: want a number of lines or all: %w", tail, errdefs.ErrInvalidArgument)
				}
				opts = append(opts, client.WithTail(n))
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				opts = append(opts, client.WithSince(t))
			}
			ct, err := c.LoadContainer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := client.NewLogWriter(cmd.OutOrStdout(), cmd.ErrOrStderr(), timestamps)
			return ct.Logs(cmd.Context(), w.Write, opts...)
		}),
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the task exits")
	cmd.Flags().StringVar(&tail, "tail", "all", "print the last N lines only")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "print each line's time (RFC 3339, nanoseconds) first")
	cmd.Flags().StringVar(&since, "since", "", "print the lines written since a time (2006-01-02T15:04:05Z, Unix seconds) or a duration before now (10m)")
	return cmd
}

// attachTask follows the output of the task of the container args[0]
// names from now until it exits, then returns its exit; its stdin goes to
// a task keeld keeps a stdin for, unless noStdin.
func attachTask(cmd *cobra.Command, c *client.Client, args []string, noStdin bool) error {
	ctx := cmd.Context()
	ct, err := c.LoadContainer(ctx, args[0])
	if err != nil {
		return err
	}
	t, err := ct.Task(ctx)
	if err != nil {
		return err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return err
	}
	// Waiting from before the follow: an exit in between is not missed.
	statusC, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	var s client.ExitStatus
	switch {
	case st.Log != nil:
		w := client.NewLogWriter(cmd.OutOrStdout(), cmd.ErrOrStderr(), false)
		// Stdin goes to a task keeld keeps one for, once the output it
		// causes is sure to be followed.
		var stdinErr chan error
		started := func() {}
		if st.KeepStdin && !noStdin {
			stdinErr = make(chan error, 1)
			started = func() { go func() { stdinErr <- t.WriteStdin(ctx, cmd.InOrStdin()) }() }
		}
		if err := ct.Logs(ctx, w.Write, client.WithFollow, client.WithTail(0), client.WithStarted(started)); err != nil {
			return err
		}
		s = <-statusC
		if stdinErr != nil {
			select {
			case err := <-stdinErr:
				// A stdin closed by the task's end is no failure.
				if err != nil && !errdefs.IsFailedPrecondition(err) && !errdefs.IsNotFound(err) {
					return err
				}
			default:
			}
		}
	case isRegularFile(st.Stdout):
		// --log FILE: the runtime appends to a file of the user's, here.
		if s, err = followFile(ctx, st.Stdout, cmd.OutOrStdout(), statusC); err != nil {
			return err
		}
	default:
		return fmt.Errorf("task %q: its output is not kept (--log none) or goes to the terminal of the client that started it: %w",
			t.ID(), errdefs.ErrFailedPrecondition)
	}
	if s.Err != nil {
		return s.Err
	}
	if s.Code != 0 {
		return exitCodeError{code: int(s.Code)}
	}
	return nil
}

func isRegularFile(path string) bool {
	fi, err := os.Stat(path)
	return path != "" && err == nil && fi.Mode().IsRegular()
}

// followFile copies the file at path to w as it grows until the process
// exits, and returns its exit.
func followFile(ctx context.Context, path string, w io.Writer, statusC <-chan client.ExitStatus) (client.ExitStatus, error) {
	f, err := os.Open(path)
	if err != nil {
		return client.ExitStatus{}, err
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return client.ExitStatus{}, err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return client.ExitStatus{}, err
		}
		select {
		case s := <-statusC:
			_, err := io.Copy(w, f)
			return s, err
		case <-ctx.Done():
			return client.ExitStatus{}, ctx.Err()
		case <-tick.C:
		}
	}
}
