package shim

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/containerd/console"
	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// procIO is a process's stdio. Without a terminal, a file or log path is
// handed to the process as is (no copy); a FIFO for stdout or stderr is
// opened read-write and handed over too, so the process never meets
// EPIPE; stdin from a FIFO is copied into a pipe whose write end the shim
// holds, so CloseIO can give the process EOF. With a terminal, the shim
// copies between the paths and the console master runc sends it.
//
// With a log (paths.LogPath), the process writes into pipes instead, and
// the shim copies each line into the CRI log and on to the stdout or
// stderr path, if any (see log.go).
type procIO struct {
	paths IO

	// The process's ends, closed once runc has started it.
	stdin, stdout, stderr *os.File
	// stdinW is the shim's end of the stdin pipe (no terminal).
	stdinW *os.File

	mu       sync.Mutex
	stdinSrc *os.File // the opened stdin path, when copying
	console  console.Console
	socket   *gorunc.Socket

	inDone  chan struct{} // the stdin copy ended
	outDone chan struct{} // the output copies ended (terminal, log)

	log *logCopies
}

var _ gorunc.IO = (*procIO)(nil)

func newProcIO(paths IO) (_ *procIO, err error) {
	p := &procIO{paths: paths, inDone: make(chan struct{}), outDone: make(chan struct{})}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if paths.Terminal {
		if p.socket, err = gorunc.NewTempConsoleSocket(); err != nil {
			return nil, err
		}
		if paths.LogPath != "" {
			if p.log, err = openLog(paths); err != nil {
				return nil, err
			}
		}
		// runc's own stdio: its errors go to its log file.
		if p.stdout, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
			return nil, err
		}
		return p, nil
	}
	if paths.Stdin != "" {
		if isFIFO(paths.Stdin) {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			p.stdin, p.stdinW = r, w
			go p.copyStdin(w, true)
		} else if p.stdin, err = os.Open(paths.Stdin); err != nil {
			return nil, err
		}
	} else {
		close(p.inDone)
	}
	if paths.LogPath != "" {
		if p.log, err = openLog(paths); err != nil {
			return nil, err
		}
		if p.stdout, err = p.log.pipe(stdoutStream, paths.Stdout); err != nil {
			return nil, err
		}
		if p.stderr, err = p.log.pipe(stderrStream, paths.Stderr); err != nil {
			return nil, err
		}
		go p.log.wait(p.outDone)
		return p, nil
	}
	if p.stdout, err = openOutput(paths.Stdout); err != nil {
		return nil, err
	}
	if p.stderr, err = openOutput(paths.Stderr); err != nil {
		return nil, err
	}
	close(p.outDone)
	return p, nil
}

func isFIFO(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeNamedPipe != 0
}

// openOutput opens where a process writes: /dev/null for nothing, a FIFO
// read-write (so neither side blocks on open), a file for appending.
func openOutput(path string) (*os.File, error) {
	switch {
	case path == "":
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	case isFIFO(path):
		return os.OpenFile(path, os.O_RDWR, 0)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

// copyStdin copies the stdin path into w until the writer side closes or
// CloseIO.
func (p *procIO) copyStdin(w io.Writer, closeW bool) {
	defer close(p.inDone)
	if closeW {
		defer w.(io.Closer).Close()
	}
	// Blocks until a writer opens the FIFO; kept open, the FIFO is opened
	// read-write, so that no writer's leaving reads as EOF.
	flag := os.O_RDONLY
	if p.paths.KeepStdin {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(p.paths.Stdin, flag, 0)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.stdinSrc = f
	p.mu.Unlock()
	io.Copy(w, f)
	f.Close()
}

func (p *procIO) Set(cmd *exec.Cmd) {
	if p.stdin != nil {
		cmd.Stdin = p.stdin
	}
	if p.stdout != nil {
		cmd.Stdout = p.stdout
	}
	if p.stderr != nil {
		cmd.Stderr = p.stderr
	} else if p.stdout != nil {
		cmd.Stderr = p.stdout
	}
}

// CloseAfterStart closes the process's ends, which it now holds.
func (p *procIO) CloseAfterStart() error {
	for _, f := range []*os.File{p.stdin, p.stdout, p.stderr} {
		if f != nil {
			f.Close()
		}
	}
	p.stdin, p.stdout, p.stderr = nil, nil, nil
	return nil
}

// consoleSocket is the socket runc sends the console master to, if any.
func (p *procIO) consoleSocket() gorunc.ConsoleSocket {
	if p.socket == nil {
		return nil
	}
	return p.socket
}

// startConsole receives the master from runc and copies between it and
// the paths.
func (p *procIO) startConsole() error {
	if p.socket == nil {
		return nil
	}
	defer func() {
		p.socket.Close()
		p.socket = nil
	}()
	master, err := p.socket.ReceiveMaster()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.console = master
	p.mu.Unlock()
	if p.paths.Stdin != "" {
		go p.copyStdin(master, false)
	} else {
		close(p.inDone)
	}
	if p.log != nil {
		// The terminal's output, as stdout, into the log and on.
		if err := p.log.copyFrom(stdoutStream, master, nil, p.paths.Stdout); err != nil {
			return err
		}
		go p.log.wait(p.outDone)
		return nil
	}
	out, err := openOutput(p.paths.Stdout)
	if err != nil {
		return err
	}
	go func() {
		defer close(p.outDone)
		// Ends with EIO once every holder of the slave is gone.
		io.Copy(out, master)
		out.Close()
	}()
	return nil
}

func (p *procIO) resize(width, height uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return errors.New("no console")
	}
	return p.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// closeStdin gives the process EOF: at once when the writer has gone
// (the copy drained it), else after a short grace for data in flight.
func (p *procIO) closeStdin() {
	select {
	case <-p.inDone:
	case <-time.After(100 * time.Millisecond):
	}
	p.mu.Lock()
	if p.stdinSrc != nil {
		p.stdinSrc.Close()
	}
	p.mu.Unlock()
	if p.stdinW != nil {
		p.stdinW.Close()
	}
	if p.paths.Stdin != "" {
		// A copy still blocked opening the FIFO: a writer of our own
		// releases it, and it then reads EOF.
		if f, err := os.OpenFile(p.paths.Stdin, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}
}

// waitOutput waits, a bounded while, for the terminal output copy, so a
// process's last words are written before its exit is reported.
func (p *procIO) waitOutput(d time.Duration) {
	select {
	case <-p.outDone:
	case <-time.After(d):
	}
}

func (p *procIO) Close() error {
	p.CloseAfterStart()
	if p.socket != nil {
		p.socket.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console != nil {
		p.console.Close()
	}
	if p.stdinSrc != nil {
		p.stdinSrc.Close()
	}
	if p.stdinW != nil {
		p.stdinW.Close()
	}
	if p.log != nil {
		p.log.abandon()
	}
	return nil
}

// The gorunc.IO accessors for the process's own streams: the shim never
// reads them itself.
func (p *procIO) Stdin() io.WriteCloser { return nil }
func (p *procIO) Stdout() io.ReadCloser { return nil }
func (p *procIO) Stderr() io.ReadCloser { return nil }
