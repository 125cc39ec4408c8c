// Package cio connects a task's stdio to the caller: FIFOs in a private
// directory that the runtime opens by path, copied to and from the
// caller's streams; a log file; or nothing.
//
//	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithStdio))
//
// The read side of each output FIFO is opened at creation, together with a
// write end of keel's own that Started drops once the runtime holds the
// process's: so output written before the caller reads is kept, and the
// copy ends with EOF when the process and its children are gone.
package cio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Config is what the runtime is given: paths, empty for none; Log, when
// set, keeps the output in a log as well.
type Config struct {
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
	Log      *Log
	// KeepStdin, with no Stdin, gives the process a stdin keeld holds
	// open, which Task.WriteStdin writes to (keel task attach), attach
	// after attach, until CloseIO.
	KeepStdin bool
}

// Log asks for the process's output in a CRI format log, which the
// runtime writes for as long as the process runs, whoever reads its
// stdio. An empty Path is the container's own log, which keeld keeps
// until the container is deleted and serves (Container.Logs); MaxSize
// and MaxFiles rotate it (0: keeld's container_logs defaults).
type Log struct {
	Path     string
	MaxSize  int64
	MaxFiles int
}

// IO is a process's stdio, seen from the caller.
type IO interface {
	// Config is what to hand to the runtime.
	Config() Config
	// Started tells that the runtime started the process: keel's own
	// write ends are dropped so the copies end with the process.
	Started()
	// Wait waits for the output copies to end.
	Wait()
	// Cancel stops the copies now (a failed create).
	Cancel()
	// Close cancels and removes the FIFOs.
	Close() error
}

// Creator makes the IO of process id.
type Creator func(id string) (IO, error)

// Streams are the caller's ends.
type Streams struct {
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	Terminal bool
	Log      *Log
}

// Opt sets the streams of a Creator.
type Opt func(*Streams)

// WithStdio uses the caller's own stdin, stdout and stderr.
func WithStdio(s *Streams) { s.Stdin, s.Stdout, s.Stderr = os.Stdin, os.Stdout, os.Stderr }

// WithStreams uses the given streams; nil ones get nothing.
func WithStreams(stdin io.Reader, stdout, stderr io.Writer) Opt {
	return func(s *Streams) { s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr }
}

// WithTerminal gives the process a console: output comes on Stdout only.
func WithTerminal(s *Streams) { s.Terminal = true }

// WithLog keeps the output in the log l as well as copying it to the
// streams.
func WithLog(l Log) Opt { return func(s *Streams) { s.Log = &l } }

// ContainerLog gives the process no stdio of the caller's and keeps its
// output in the container's log (see Log), for `keel logs` and attach.
func ContainerLog(l Log) Creator {
	return func(string) (IO, error) { return &fixed{cfg: Config{Log: &l}}, nil }
}

// NewCreator copies between FIFOs and the streams opts choose.
func NewCreator(opts ...Opt) Creator {
	var s Streams
	for _, o := range opts {
		o(&s)
	}
	return func(id string) (IO, error) { return newFIFOs(id, s) }
}

// Stdio is NewCreator(WithStdio).
func Stdio(id string) (IO, error) { return NewCreator(WithStdio)(id) }

// NullIO gives the process no stdio.
func NullIO(string) (IO, error) { return &fixed{}, nil }

// LogFile appends the process's stdout and stderr to path, which the
// runtime opens: the output outlives the caller.
func LogFile(path string) Creator {
	return func(string) (IO, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		return &fixed{cfg: Config{Stdout: abs, Stderr: abs}}, nil
	}
}

// KeepStdin gives the processes c makes a stdin keeld holds open (see
// Config.KeepStdin); c must give them no stdin of the caller's.
func KeepStdin(c Creator) Creator {
	return func(id string) (IO, error) {
		io, err := c(id)
		if err != nil {
			return nil, err
		}
		return keptStdin{io}, nil
	}
}

type keptStdin struct{ IO }

func (k keptStdin) Config() Config {
	cfg := k.IO.Config()
	cfg.KeepStdin = true
	return cfg
}

// fixed is stdio the runtime handles alone.
type fixed struct{ cfg Config }

func (f *fixed) Config() Config { return f.cfg }
func (*fixed) Started()         {}
func (*fixed) Wait()            {}
func (*fixed) Cancel()          {}
func (*fixed) Close() error     { return nil }

type fifos struct {
	dir  string
	cfg  Config
	hold []*os.File // keel's write ends of the output FIFOs
	// started is closed by Started (or Cancel).
	started chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	open    []*os.File
}

func newFIFOs(id string, s Streams) (_ *fifos, err error) {
	dir, err := os.MkdirTemp("", "keel-cio-")
	if err != nil {
		return nil, err
	}
	f := &fifos{dir: dir, cfg: Config{Terminal: s.Terminal, Log: s.Log}, started: make(chan struct{})}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	mk := func(name string) (string, error) {
		p := filepath.Join(dir, id+"-"+name)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return "", fmt.Errorf("fifo %s: %w", p, err)
		}
		return p, nil
	}
	if s.Stdin != nil {
		if f.cfg.Stdin, err = mk("stdin"); err != nil {
			return nil, err
		}
		// Read-write: opening never blocks; closing it is the process's EOF.
		w, err := os.OpenFile(f.cfg.Stdin, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		f.track(w)
		go func() {
			io.Copy(w, s.Stdin)
			// Closed before the runtime opened its end, the FIFO would
			// drop what was written: wait for the start, then until the
			// runtime has read it all (with a terminal, the runtime
			// opens its end only once it has the console, after the
			// start).
			<-f.started
			waitDrained(w)
			w.Close()
		}()
	}
	output := func(name string, dst io.Writer) (string, error) {
		if dst == nil {
			return "", nil
		}
		p, err := mk(name)
		if err != nil {
			return "", err
		}
		hold, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		f.hold = append(f.hold, hold)
		r, err := os.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		f.track(r)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			io.Copy(dst, r)
			r.Close()
		}()
		return p, nil
	}
	if f.cfg.Stdout, err = output("stdout", s.Stdout); err != nil {
		return nil, err
	}
	if !s.Terminal {
		if f.cfg.Stderr, err = output("stderr", s.Stderr); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *fifos) track(file *os.File) {
	f.mu.Lock()
	f.open = append(f.open, file)
	f.mu.Unlock()
}

func (f *fifos) Config() Config { return f.cfg }

func (f *fifos) Started() {
	f.once.Do(func() {
		for _, h := range f.hold {
			h.Close()
		}
		close(f.started)
	})
}

func (f *fifos) Wait() { f.wg.Wait() }

func (f *fifos) Cancel() {
	f.Started()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, file := range f.open {
		file.Close()
	}
}

func (f *fifos) Close() error {
	f.Cancel()
	if err := os.RemoveAll(f.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove fifos %s: %w: %w", f.dir, err, errdefs.ErrUnknown)
	}
	return nil
}

// waitDrained returns once nothing written to the FIFO w is left unread,
// or w is closed (Cancel).
func waitDrained(w *os.File) {
	rc, err := w.SyscallConn()
	if err != nil {
		return
	}
	for {
		unread := 0
		if err := rc.Control(func(fd uintptr) {
			unread, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
		}); err != nil || unread == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
