package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/runtime"
)

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: unknown: %w", s, errdefs.ErrInvalidArgument)
}

// taskJSON is a task as `--format json` prints it.
type taskJSON struct {
	ID         string     `json:"id"`
	Runtime    string     `json:"runtime"`
	Pid        uint32     `json:"pid"`
	Status     string     `json:"status"`
	ExitStatus *uint32    `json:"exit_status,omitempty"`
	ExitedAt   *time.Time `json:"exited_at,omitempty"`
	Reason     string     `json:"reason,omitempty"`
}

func taskCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Aliases: []string{"tasks", "t"}, Short: "Manage tasks (a container's running processes)"}
	cmd.AddCommand(taskLsCommand(g), taskStartCommand(g), taskAttachCommand(g), taskKillCommand(g), taskPsCommand(g), taskExecCommand(g),
		taskPauseCommand(g), taskResumeCommand(g), taskMetricsCommand(g), taskRmCommand(g), taskCheckpointCommand(g), taskReopenLogCommand(g))
	return cmd
}

// withTask is a command's RunE that runs fn connected to keeld, on the task
// of the container its first argument names.
func withTask(g *globals, fn func(cmd *cobra.Command, t *client.Task, args []string) error) func(*cobra.Command, []string) error {
	return g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
		ct, err := c.LoadContainer(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		t, err := ct.Task(cmd.Context())
		if err != nil {
			return err
		}
		return fn(cmd, t, args[1:])
	})
}

func taskLsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the namespace's tasks on every runtime",
		Args:    cobra.NoArgs,
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Tasks(cmd.Context())
			if err != nil {
				return err
			}
			t := table{header: []string{"TASK", "PID", "STATUS", "RUNTIME"}}
			values := []taskJSON{}
			for _, ti := range list {
				status := ti.Status.String()
				v := taskJSON{ID: ti.ID, Runtime: ti.Runtime, Pid: ti.Pid, Status: ti.Status.String(), Reason: ti.Reason}
				// An unknown task has an exit only when its end was seen.
				if ti.Status == runtime.StatusStopped || !ti.ExitedAt.IsZero() {
					code, at := ti.ExitStatus, ti.ExitedAt
					v.ExitStatus = &code
					if !at.IsZero() {
						v.ExitedAt = &at
					}
					status = fmt.Sprintf("%s (exit %d)", status, code)
				}
				if ti.Reason != "" {
					status += ": " + ti.Reason
				}
				t.rows = append(t.rows, []string{ti.ID, strconv.Itoa(int(ti.Pid)), status, ti.Runtime})
				t.ids = append(t.ids, ti.ID)
				values = append(values, v)
			}
			t.values = values
			return g.print(cmd.OutOrStdout(), t)
		}),
	}
}

func taskStartCommand(g *globals) *cobra.Command {
	var startIO taskIOFlags
	start := &cobra.Command{
		Use:   "start [-d] [-i] [-t] [--log none|FILE] [--log-opt OPTS] ID",
		Short: "Create and start a container's task; wait for it unless -d, and exit with its code",
		Args:  cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ctx := contextWithoutCancel(cmd)
			ct, err := c.LoadContainer(ctx, args[0])
			if err != nil {
				return err
			}
			if s := ct.Info().Spec; s != nil && s.Process != nil {
				startIO.tty = startIO.tty || s.Process.Terminal
			}
			code, err := runTask(ctx, ct, startIO, cmd)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code: code}
			}
			return nil
		}),
	}
	start.Flags().BoolVarP(&startIO.detach, "detach", "d", false, "return once started")
	start.Flags().BoolVarP(&startIO.tty, "tty", "t", false, "a terminal (default: as the spec says)")
	registerLogFlags(start, &startIO)
	registerInteractive(start, &startIO)
	return start
}

func taskAttachCommand(g *globals) *cobra.Command {
	var noStdin bool
	cmd := &cobra.Command{
		Use:   "attach [--no-stdin] ID",
		Short: "Follow a task's output from now until it exits, then exit with its code",
		Long: "Follow a task: print its output as it comes, from the container's log (stdout to stdout, stderr to\n" +
			"stderr), or from the file a task started with --log FILE appends to, until the task exits. A task\n" +
			"whose stdin keeld keeps open (started with -i and -d) gets attach's stdin.",
		Args: cobra.ExactArgs(1),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return attachTask(cmd, c, args, noStdin)
		}),
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not send stdin to the task")
	return cmd
}

func taskKillCommand(g *globals) *cobra.Command {
	var (
		sig    string
		all    bool
		execID string
	)
	kill := &cobra.Command{
		Use:   "kill [-s SIGNAL] [--all] [--exec-id ID] ID",
		Short: "Signal a task (SIGTERM by default)",
		Args:  cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error {
			s, err := parseSignal(sig)
			if err != nil {
				return err
			}
			var opts []client.KillOpt
			if all {
				opts = append(opts, client.WithKillAll)
			}
			if execID != "" {
				return t.LoadProcess(execID).Kill(cmd.Context(), s, opts...)
			}
			return t.Kill(cmd.Context(), s, opts...)
		}),
	}
	kill.Flags().StringVarP(&sig, "signal", "s", "SIGTERM", "signal, by name or number")
	kill.Flags().BoolVarP(&all, "all", "a", false, "signal every process of the task")
	kill.Flags().StringVar(&execID, "exec-id", "", "signal this exec'd process")
	return kill
}

func taskPsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ps ID",
		Short: "List a task's processes",
		Args:  cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error {
			pids, err := t.Pids(cmd.Context())
			if err != nil {
				return err
			}
			tb := table{header: []string{"PID", "EXEC ID"}, values: pids}
			for _, p := range pids {
				tb.rows = append(tb.rows, []string{strconv.Itoa(int(p.Pid)), p.ExecID})
				tb.ids = append(tb.ids, strconv.Itoa(int(p.Pid)))
			}
			return g.print(cmd.OutOrStdout(), tb)
		}),
	}
}

func taskExecCommand(g *globals) *cobra.Command {
	var (
		execIO  taskIOFlags
		execEnv []string
		execCwd string
		execUsr string
		execID  string
	)
	execCmd := &cobra.Command{
		Use:   "exec [-i] [-t] [-d] [--exec-id ID] [--env K=V] [--cwd DIR] [--user USER[:GROUP]] ID ARGS...",
		Short: "Run a process in a running task; exit with its code",
		Args:  cobra.MinimumNArgs(2),
		RunE: g.connected(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ctx := contextWithoutCancel(cmd)
			ct, err := c.LoadContainer(ctx, args[0])
			if err != nil {
				return err
			}
			t, err := ct.Task(ctx)
			if err != nil {
				return err
			}
			spec := ct.Info().Spec
			if spec == nil || spec.Process == nil {
				return fmt.Errorf("container %q has no process spec: %w", ct.ID(), errdefs.ErrFailedPrecondition)
			}
			p := *spec.Process
			p.Args = args[1:]
			p.Terminal = execIO.tty
			if len(execEnv) > 0 || execCwd != "" || execUsr != "" {
				f := runFlags{env: execEnv, cwd: execCwd, user: execUsr}
				s := *spec
				s.Process = &p
				opts, err := f.execOpts()
				if err != nil {
					return err
				}
				// The task's own root: what its processes see as /.
				octx := oci.WithRootFS(ctx, oci.RootFSPath(fmt.Sprintf("/proc/%d/root", t.Pid())))
				for _, o := range opts {
					if err := o(octx, &s); err != nil {
						return err
					}
				}
			}
			id := execID
			if id == "" {
				id = fmt.Sprintf("exec-%d", time.Now().UnixNano())
			}
			proc, err := t.Exec(ctx, id, &p, execIO.creator())
			if err != nil {
				return err
			}
			code, err := runProcess(ctx, proc, execIO, cmd, !execIO.detach)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code: code}
			}
			return nil
		}),
	}
	// Flags after IMAGE/ID belong to the process.
	execCmd.Flags().SetInterspersed(false)
	execCmd.Flags().BoolVarP(&execIO.tty, "tty", "t", false, "give the process a terminal")
	execCmd.Flags().BoolVarP(&execIO.detach, "detach", "d", false, "return once started (no stdio unless --log)")
	execCmd.Flags().StringVar(&execIO.log, "log", "", "append stdout and stderr to FILE")
	registerInteractive(execCmd, &execIO)
	execCmd.Flags().StringVar(&execID, "exec-id", "", "the process's exec id (default: generated)")
	execCmd.Flags().StringArrayVar(&execEnv, "env", nil, "environment variable K=V (repeatable)")
	execCmd.Flags().StringVar(&execCwd, "cwd", "", "working directory")
	execCmd.Flags().StringVar(&execUsr, "user", "", "uid, name, uid:gid or name:group (names from the container's /etc/passwd and /etc/group)")
	return execCmd
}

func taskRmCommand(g *globals) *cobra.Command {
	var rmForce bool
	rm := &cobra.Command{
		Use:     "rm [--force] ID",
		Aliases: []string{"delete", "remove"},
		Short:   "Delete a stopped task and print its exit status (--force kills a running one first)",
		Args:    cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error {
			ctx := cmd.Context()
			if rmForce {
				st, err := t.Status(ctx)
				if err != nil {
					return err
				}
				if st.Status != runtime.StatusStopped {
					statusC, _ := t.Wait(ctx)
					if st.Status == runtime.StatusPaused {
						t.Resume(ctx)
					}
					if err := t.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
						return err
					}
					<-statusC
				}
			}
			e, err := t.Delete(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d\n", e.Code)
			return nil
		}),
	}
	rm.Flags().BoolVarP(&rmForce, "force", "f", false, "kill a running task first")
	return rm
}

func taskCheckpointCommand(g *globals) *cobra.Command {
	var (
		ckptPath string
		ckptExit bool
	)
	checkpoint := &cobra.Command{
		Use:   "checkpoint --path DIR [--exit] ID",
		Short: "Checkpoint a task with CRIU into DIR (where the runtime announces the checkpoint capability)",
		Args:  cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error {
			if ckptPath == "" {
				return fmt.Errorf("--path: required: %w", errdefs.ErrInvalidArgument)
			}
			return t.Checkpoint(cmd.Context(), ckptPath, ckptExit)
		}),
	}
	checkpoint.Flags().StringVar(&ckptPath, "path", "", "directory the checkpoint image is written to")
	checkpoint.Flags().BoolVar(&ckptExit, "exit", false, "stop the task once checkpointed")
	return checkpoint
}

// taskSimpleCommand is a command that calls fn on the task of container ID.
func taskSimpleCommand(g *globals, use, short string, fn func(cmd *cobra.Command, t *client.Task) error) *cobra.Command {
	return &cobra.Command{
		Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
		RunE: withTask(g, func(cmd *cobra.Command, t *client.Task, _ []string) error { return fn(cmd, t) }),
	}
}

func taskPauseCommand(g *globals) *cobra.Command {
	return taskSimpleCommand(g, "pause", "Freeze every process of a task", func(cmd *cobra.Command, t *client.Task) error { return t.Pause(cmd.Context()) })
}

func taskResumeCommand(g *globals) *cobra.Command {
	return taskSimpleCommand(g, "resume", "Thaw a paused task", func(cmd *cobra.Command, t *client.Task) error { return t.Resume(cmd.Context()) })
}

func taskReopenLogCommand(g *globals) *cobra.Command {
	return taskSimpleCommand(g, "reopen-log", "Reopen a task's log file at its path, after renaming it away (log rotation)",
		func(cmd *cobra.Command, t *client.Task) error { return t.ReopenLog(cmd.Context()) })
}

// contextWithoutCancel is the command's context, not ended by SIGINT or
// SIGTERM: those are forwarded to the task instead.
func contextWithoutCancel(cmd *cobra.Command) context.Context {
	return context.WithoutCancel(cmd.Context())
}
