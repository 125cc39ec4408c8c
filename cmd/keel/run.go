package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/client/oci"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// exitCodeError makes keel exit with code (a container's exit code, a
// check's status): silently, or after printing err.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e exitCodeError) Unwrap() error { return e.err }

// exitOnError makes the errors of run exit with code instead of 1; an
// exitCodeError of run's own keeps its code.
func exitOnError(code int, run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		if ee := (exitCodeError{}); err == nil || errors.As(err, &ee) {
			return err
		}
		return exitCodeError{code: code, err: err}
	}
}

// runFlags are `keel run`'s and `keel container create`'s spec flags.
type runFlags struct {
	env         []string
	mounts      []string
	labels      []string
	cwd         string
	user        string
	memory      string
	cpus        float64
	pids        int64
	snapshotter string
	runtime     string
	tty         bool
	readonly    bool
	privileged  bool
	sec         secFlags
	netFlags    // run_net.go
}

func (f *runFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.env, "env", nil, "environment variable K=V (repeatable)")
	fl.StringArrayVar(&f.mounts, "mount", nil, "mount type=bind,src=PATH,dst=PATH[,options=rbind:ro] (repeatable)")
	fl.StringArrayVar(&f.labels, "label", nil, "container label KEY=VALUE (repeatable)")
	fl.StringVar(&f.cwd, "cwd", "", "working directory (default: the image's)")
	fl.StringVar(&f.user, "user", "", "uid, name, uid:gid or name:group; names from the image's /etc/passwd and /etc/group (default: the image's)")
	fl.StringVar(&f.memory, "memory-limit", "", "memory limit in bytes, or with a k, m or g suffix")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit, in CPUs (e.g. 0.5)")
	fl.Int64Var(&f.pids, "pids-limit", 0, "most processes at once")
	fl.StringVar(&f.snapshotter, "snapshotter", "", "snapshotter of the rootfs (default: keeld's)")
	fl.StringVar(&f.runtime, "runtime", "", "runtime plugin (default: keeld's only one)")
	fl.BoolVarP(&f.tty, "tty", "t", false, "give the process a terminal")
	fl.BoolVar(&f.readonly, "read-only", false, "mount the rootfs read-only")
	fl.BoolVar(&f.privileged, "privileged", false, "every capability and device, no seccomp filter (the host's power)")
	f.sec.register(cmd)
	f.netFlags.register(cmd)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(strings.ToLower(s), "k"):
		mult = 1 << 10
	case strings.HasSuffix(strings.ToLower(s), "m"):
		mult = 1 << 20
	case strings.HasSuffix(strings.ToLower(s), "g"):
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, with an optional k, m or g: %w", s, errdefs.ErrInvalidArgument)
	}
	return n * mult, nil
}

func parseMount(s string) (specs.Mount, error) {
	m := specs.Mount{Type: "bind"}
	for _, part := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "type":
			m.Type = v
		case "src", "source":
			m.Source = v
		case "dst", "destination", "target":
			m.Destination = v
		case "options":
			m.Options = strings.Split(v, ":")
		default:
			return m, fmt.Errorf("mount %q: unknown key %q: %w", s, k, errdefs.ErrInvalidArgument)
		}
	}
	if m.Destination == "" {
		return m, fmt.Errorf("mount %q: no dst: %w", s, errdefs.ErrInvalidArgument)
	}
	if m.Type == "bind" && len(m.Options) == 0 {
		m.Options = []string{"rbind", "rw"}
	}
	return m, nil
}

// specOpts turns the flags into spec options, after the image's config.
func (f *runFlags) specOpts(img *client.LocalImage, args []string) ([]oci.SpecOpt, error) {
	opts := []oci.SpecOpt{oci.WithImageConfig(img)}
	if len(args) > 0 {
		opts = append(opts, oci.WithProcessArgs(args...))
	}
	opts = append(opts, f.sec.envOpts()...)
	if len(f.env) > 0 {
		opts = append(opts, oci.WithEnv(f.env...))
	}
	if f.cwd != "" {
		opts = append(opts, oci.WithCwd(f.cwd))
	}
	if f.user != "" {
		opts = append(opts, oci.WithUserGroups(f.user))
	}
	for _, s := range f.mounts {
		m, err := parseMount(s)
		if err != nil {
			return nil, err
		}
		opts = append(opts, oci.WithMounts(m))
	}
	if f.memory != "" {
		n, err := parseSize(f.memory)
		if err != nil {
			return nil, err
		}
		opts = append(opts, oci.WithMemoryLimit(n))
	}
	if f.cpus != 0 {
		opts = append(opts, oci.WithCPUs(f.cpus))
	}
	if f.pids != 0 {
		opts = append(opts, oci.WithPidsLimit(f.pids))
	}
	if f.tty {
		opts = append(opts, oci.WithTTY)
	}
	if f.readonly {
		opts = append(opts, oci.WithReadonlyRootfs)
	}
	sec, err := f.sec.specOpts()
	if err != nil {
		return nil, err
	}
	opts = append(opts, sec...)
	if f.privileged {
		after, err := f.sec.afterPrivileged()
		if err != nil {
			return nil, err
		}
		opts = append(append(opts, oci.WithPrivileged), after...)
	}
	return opts, nil
}

// execOpts are the options an exec'd process takes from the flags.
func (f *runFlags) execOpts() ([]oci.SpecOpt, error) {
	var opts []oci.SpecOpt
	if len(f.env) > 0 {
		opts = append(opts, oci.WithEnv(f.env...))
	}
	if f.cwd != "" {
		opts = append(opts, oci.WithCwd(f.cwd))
	}
	if f.user != "" {
		opts = append(opts, oci.WithUserGroups(f.user))
	}
	return opts, nil
}

// newContainer records container id from image ref with the flags' spec.
func (f *runFlags) newContainer(ctx context.Context, c *client.Client, ref, id string, args []string) (*client.Container, error) {
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %q: not here (keel image pull it first): %w", ref, err)
		}
		return nil, err
	}
	opts, err := f.specOpts(c.LocalImage(img), args)
	if err != nil {
		return nil, err
	}
	netOpts, netSpecOpts, err := f.netFlags.containerOpts(id)
	if err != nil {
		return nil, err
	}
	labels, _ := parseLabels(f.labels)
	return c.NewContainer(ctx, id, append([]client.NewContainerOpt{
		client.WithImage(img),
		client.WithSnapshotter(f.snapshotter),
		client.WithNewSnapshot(id, img),
		client.WithNewSpec(append(opts, netSpecOpts...)...),
		client.WithRuntime(f.runtime, nil),
		client.WithContainerLabels(labels),
	}, netOpts...)...)
}

func runCommand(g *globals) *cobra.Command {
	var (
		f      runFlags
		rm     bool
		detach bool
		stdio  taskIOFlags // -i, --log, --log-opt
	)
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE ID [ARGS...]",
		Short: "Create a container from an image and run its task; exit with its exit code",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rm && detach {
				return fmt.Errorf("--rm and --detach: pick one: %w", errdefs.ErrInvalidArgument)
			}
			return g.withClient(cmd, func(c *client.Client) error {
				// Signals are forwarded, not fatal: keel's own context must
				// outlive a SIGINT or SIGTERM.
				ctx := context.WithoutCancel(cmd.Context())
				ctr, err := f.newContainer(ctx, c, args[0], args[1], args[2:])
				if err != nil {
					return err
				}
				tio := stdio
				tio.tty, tio.detach = f.tty, detach
				code, err := runTask(ctx, ctr, tio, cmd)
				if rm {
					if derr := ctr.Delete(ctx, client.WithForce); derr != nil && err == nil {
						err = derr
					}
				}
				if err != nil {
					return err
				}
				if code != 0 {
					return exitCodeError{code: code}
				}
				return nil
			})
		},
	}
	// Flags after IMAGE/ID belong to the process.
	cmd.Flags().SetInterspersed(false)
	f.register(cmd)
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the container (and its task) once it exits")
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "start the task and return; its output goes to its log (keel logs, keel task attach)")
	registerLogFlags(cmd, &stdio)
	registerInteractive(cmd, &stdio)
	return cmd
}

type taskIOFlags struct {
	tty     bool
	detach  bool
	log     string  // --log: "" for the container's log, none, or a file
	logOpts cio.Log // --log-opt
	stdin   bool    // -i
}

// creator picks the task's stdio: the caller's unless detached (stdin
// only with -i), and the container's log (see logs.go) unless --log says
// otherwise; detached with -i, a stdin keeld keeps open for attach.
func (o taskIOFlags) creator() cio.Creator {
	if o.detach {
		var c cio.Creator
		switch o.log {
		case logNone:
			c = cio.NullIO
		case "":
			c = cio.ContainerLog(o.logOpts)
		default:
			c = cio.LogFile(o.log)
		}
		if o.stdin {
			c = cio.KeepStdin(c)
		}
		return c
	}
	if o.log != "" && o.log != logNone {
		return cio.LogFile(o.log)
	}
	opts := append([]cio.Opt{o.stdio()}, o.containerLogOpts()...)
	if o.tty {
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(opts...)
}

// runTask creates and starts ctr's task and, unless detached, waits for it
// (forwarding signals, resizing the terminal) and deletes it.
func runTask(ctx context.Context, ctr *client.Container, o taskIOFlags, cmd *cobra.Command) (int, error) {
	task, err := ctr.NewTask(ctx, o.creator())
	if err != nil {
		return 0, err
	}
	return runProcess(ctx, &task.Process, o, cmd, true)
}

// runProcess starts p and, unless detached, follows it to its exit.
func runProcess(ctx context.Context, p *client.Process, o taskIOFlags, cmd *cobra.Command, deleteAfter bool) (int, error) {
	statusC, err := p.Wait(ctx)
	if err != nil {
		return 0, err
	}
	var restore func()
	if o.tty && o.stdin && !o.detach && term.IsTerminal(int(os.Stdin.Fd())) {
		st, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return 0, fmt.Errorf("terminal raw mode: %w", err)
		}
		restore = func() { term.Restore(int(os.Stdin.Fd()), st) }
		defer restore()
	}
	// Signals are caught before the start, so one that comes while the
	// process starts goes to it rather than ending keel.
	if !o.detach {
		stop := forwardSignals(ctx, p, o.tty)
		defer stop()
	}
	if err := p.Start(ctx); err != nil {
		p.Delete(ctx)
		return 0, err
	}
	if o.detach {
		fmt.Fprintln(cmd.OutOrStdout(), p.ID())
		return 0, nil
	}
	status := <-statusC
	if status.Err != nil {
		return 0, fmt.Errorf("wait for %s: %w", p.ID(), status.Err)
	}
	// An exit the process did not make (its shim died: status 255) says why.
	if status.Code == 255 {
		if info, err := p.Status(ctx); err == nil && info.Reason != "" {
			fmt.Fprintf(cmd.ErrOrStderr(), "keel: %s: %s\n", p.ID(), info.Reason)
		}
	}
	if deleteAfter || p.ExecID() != "" {
		if _, err := p.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return int(status.Code), err
		}
	}
	return int(status.Code), nil
}

// forwardSignals passes keel's signals on to p, and terminal size changes
// with a tty.
func forwardSignals(ctx context.Context, p *client.Process, tty bool) (stop func()) {
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	resize := func() {
		if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
			p.Resize(ctx, uint32(w), uint32(h))
		}
	}
	if tty {
		resize()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case s := <-sigc:
				if s == syscall.SIGWINCH {
					if tty {
						resize()
					}
					continue
				}
				if err := p.Kill(ctx, s.(syscall.Signal)); err != nil && !errdefs.IsNotFound(err) {
					fmt.Fprintf(os.Stderr, "keel: forward %s: %v\n", s, err)
				}
			}
		}
	}()
	return func() {
		signal.Stop(sigc)
		close(done)
	}
}
