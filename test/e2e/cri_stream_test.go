package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streamKeeld is a criKeeld with busybox pulled into the CRI's namespace
// and a runtime to run it.
type streamKeeld struct {
	*criKeeld
	ref string
	rs  runtimeapi.RuntimeServiceClient
}

func startStreamKeeld(t *testing.T) *streamKeeld {
	t.Helper()
	k := startCRIKeeld(t, runtimePlugin)
	rs, _ := k.criClients(t)
	s := &streamKeeld{criKeeld: k, ref: k.reg.Host + "/e2e/busybox:v1", rs: rs}
	s.ok("-n", "k8s.io", "image", "pull", "-q", s.ref)
	return s
}

// runBox runs a busybox container id in the CRI's namespace with a
// network namespace of its own (loopback only), as root, detached; args
// are run's flags before the image, then the command.
func (k *streamKeeld) runBox(t *testing.T, id string, flags []string, cmd ...string) {
	t.Helper()
	args := append([]string{"-n", "k8s.io", "run", "-d", "--net", "none", "--user", "0:0"}, flags...)
	k.ok(append(append(args, k.ref, id), cmd...)...)
	t.Cleanup(func() {
		if r := k.keel("-n", "k8s.io", "container", "rm", "--force", id); r.code != 0 {
			t.Errorf("remove %s: %v", id, r)
		}
	})
}

// exitCode is the code of a remote command's exit error, -1 for none.
func exitCode(err error) int {
	var e interface{ ExitStatus() int }
	if errors.As(err, &e) {
		return e.ExitStatus()
	}
	return -1
}

// stream runs the exec or attach at u with client-go's SPDY executor,
// as kubectl does.
func stream(t *testing.T, u string, opts remotecommand.StreamOptions) error {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	exec, err := remotecommand.NewSPDYExecutor(&rest.Config{}, http.MethodPost, parsed)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = exec.StreamWithContext(ctx, opts)
	if ctx.Err() != nil {
		t.Fatalf("stream %s did not end within a minute: %v; stdout so far %q", u, err, opts.Stdout)
	}
	return err
}

// syncBuffer is a buffer client-go's copies may still write to when a
// stream is given up.
// With until set, seen is closed once the output holds it.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	until string
	seen  chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.seen != nil && b.until != "" && strings.Contains(b.buf.String(), b.until) {
		close(b.seen)
		b.until = ""
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ttyScript shows the size of its terminal (which comes after the start:
// it waits for it) and the terminal, then reads a line and echoes it.
const ttyScript = `i=0; until s=$(stty size 2>/dev/null); [ -n "$s" ] && [ "$s" != "0 0" ] || [ $i -ge 400 ]; do i=$((i+1)); /bin/busybox sleep 0.05; done; echo $s; tty; read a; echo got $a`

// checkTTYOutput checks ttyScript's output on a 100x30 terminal, given
// "hi" to read.
func checkTTYOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{"30 100\r\n", "/dev/pts/", "got hi\r\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("exec -it output %q lacks %q", out, want)
		}
	}
}

type fixedSize struct{ sent bool }

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil
	}
	f.sent = true
	return &remotecommand.TerminalSize{Width: 100, Height: 30}
}

// TestCRIStreaming: ExecSync, Exec, Attach and PortForward of keel-cri
// on a busybox keel container in the CRI's namespace, through the CRI and
// Kubernetes' own clients (client-go's remotecommand and portforward).
func TestCRIStreaming(t *testing.T) {
	t.Parallel()
	k := startStreamKeeld(t)
	k.runBox(t, "box", nil, "sh", "-c", "mkdir -p /www && echo hello from box > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www")
	ctx := t.Context()

	t.Run("ExecSync", func(t *testing.T) {
		for _, tc := range []struct {
			name, cmd      string
			stdout, stderr string
			code           int32
		}{
			{"output", "echo out; echo err >&2", "out\n", "err\n", 0},
			{"exit code", "echo bye; exit 3", "bye\n", "", 3},
			{"container's user by default", "id -u", "0\n", "", 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := k.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: "box", Cmd: []string{"sh", "-c", tc.cmd}, Timeout: 30})
				if err != nil {
					t.Fatal(err)
				}
				if string(resp.Stdout) != tc.stdout || string(resp.Stderr) != tc.stderr || resp.ExitCode != tc.code {
					t.Errorf("got stdout %q stderr %q code %d, want %q %q %d", resp.Stdout, resp.Stderr, resp.ExitCode, tc.stdout, tc.stderr, tc.code)
				}
			})
		}
	})

	t.Run("ExecSyncTimeoutKills", func(t *testing.T) {
		start := time.Now()
		_, err := k.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: "box", Cmd: []string{"/bin/busybox", "sleep", "600"}, Timeout: 1})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("ExecSync past its timeout: %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("timed out after %v", d)
		}
		// The sleep is killed and its exec deleted: only httpd is left.
		task, err := k.client(t, "k8s.io").LoadContainer(ctx, "box")
		if err != nil {
			t.Fatal(err)
		}
		tk, err := task.Task(ctx)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, settle, "the timed-out exec gone", func() error {
			pids, err := tk.Pids(ctx)
			if err != nil {
				return err
			}
			if len(pids) != 1 {
				return fmt.Errorf("processes %+v, want httpd alone", pids)
			}
			return nil
		})
	})

	t.Run("NotFound", func(t *testing.T) {
		_, err := k.rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: "nope", Cmd: []string{"true"}})
		if status.Code(err) != codes.NotFound {
			t.Errorf("ExecSync in a missing container: %v, want NotFound", err)
		}
		_, err = k.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "nope", Cmd: []string{"true"}, Stdout: true})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Exec in a missing container: %v, want NotFound", err)
		}
	})

	t.Run("Exec", func(t *testing.T) {
		resp, err := k.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "box",
			Cmd:   []string{"sh", "-c", "read a; echo got $a; echo oops >&2; exit 5"},
			Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		var out, errb syncBuffer
		err = stream(t, resp.Url, remotecommand.StreamOptions{Stdin: strings.NewReader("hi\n"), Stdout: &out, Stderr: &errb})
		if exitCode(err) != 5 || out.String() != "got hi\n" || errb.String() != "oops\n" {
			t.Errorf("exec: err %v (code %d), stdout %q, stderr %q", err, exitCode(err), out.String(), errb.String())
		}
	})

	t.Run("ExecTTY", func(t *testing.T) {
		resp, err := k.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "box",
			Cmd:   []string{"sh", "-c", ttyScript},
			Stdin: true, Stdout: true, Tty: true})
		if err != nil {
			t.Fatal(err)
		}
		// Typed once the script is at its read, as a user would: a
		// stdin that ends before keel's tty shim opens it is lost (see
		// the report on client/cio).
		out := syncBuffer{until: "/dev/pts/", seen: make(chan struct{})}
		stdin, typing := io.Pipe()
		go func() {
			select {
			case <-out.seen:
				typing.Write([]byte("hi\n"))
			case <-ctx.Done():
			}
			typing.Close()
		}()
		err = stream(t, resp.Url, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: true, TerminalSizeQueue: &fixedSize{}})
		if err != nil {
			t.Fatalf("exec -it: %v; output %q", err, out.String())
		}
		checkTTYOutput(t, out.String())
	})

	t.Run("Attach", func(t *testing.T) {
		k.runBox(t, "att", []string{"-i"}, "sh", "-c", `while read l; do [ "$l" = bye ] && exit 0; echo got $l; echo seen $l >&2; done`)
		resp, err := k.rs.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "att", Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		var out, errb syncBuffer
		// Attach ends with the task, which "bye" ends.
		err = stream(t, resp.Url, remotecommand.StreamOptions{Stdin: strings.NewReader("hi\nbye\n"), Stdout: &out, Stderr: &errb})
		if err != nil || out.String() != "got hi\n" || errb.String() != "seen hi\n" {
			t.Errorf("attach: err %v, stdout %q, stderr %q", err, out.String(), errb.String())
		}
	})

	t.Run("PortForward", func(t *testing.T) {
		resp, err := k.rs.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "box", Port: []int32{8080}})
		if err != nil {
			t.Fatal(err)
		}
		local := forward(t, resp.Url, 8080)
		// httpd may still be starting: wait for its answer.
		eventually(t, settle, "httpd through the forward", func() error {
			body, err := httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/", local))
			if err != nil {
				return err
			}
			if body != "hello from box\n" {
				return fmt.Errorf("body %q", body)
			}
			return nil
		})
	})
}

// TestCrictlStreaming: crictl exec (plain, -s, -i with stdin, -it on a
// pty) and port-forward against keel-cri, on a keel container of the
// CRI's namespace. (crictl's --transport websocket speaks the v5
// websocket protocol, which Kubernetes' CRI streaming server, v4 at most,
// refuses, for containerd as for keel.)
func TestCrictlStreaming(t *testing.T) {
	t.Parallel()
	k := startStreamKeeld(t)
	crictl(t) // skip before anything else when it cannot be built
	if err := os.WriteFile(filepath.Join(k.env.dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	k.runBox(t, "box", nil, "sh", "-c", "mkdir -p /www && echo hello from box > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www")

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"exec", "", []string{"exec", "box", "/bin/busybox", "echo", "hi"}, "hi"},
		// -s prints stdout and stderr after the exit.
		{"exec -s", "", []string{"exec", "-s", "box", "sh", "-c", "echo sync"}, "sync"},
		{"exec -i", "from stdin\n", []string{"exec", "-i", "box", "/bin/busybox", "cat"}, "from stdin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := k.crictlIn(t, strings.NewReader(tc.stdin), tc.args...); strings.TrimSpace(out) != tc.want {
				t.Errorf("crictl %s: %q, want %q", strings.Join(tc.args, " "), out, tc.want)
			}
		})
	}

	t.Run("exec -it", func(t *testing.T) {
		// crictl wants a terminal: a pty of ours, 100x30, is its stdio.
		master, slavePath, err := console.NewPty()
		if err != nil {
			t.Fatal(err)
		}
		defer master.Close()
		if err := master.Resize(console.WinSize{Width: 100, Height: 30}); err != nil {
			t.Fatal(err)
		}
		slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd, cancel := k.crictlCmd(t, "exec", "-it", "box", "sh", "-c", ttyScript)
		defer cancel()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		err = cmd.Start()
		slave.Close()
		if err != nil {
			t.Fatal(err)
		}
		// The copy ends (EIO) once crictl, the pty's last user, exits.
		var out bytes.Buffer
		copied := make(chan struct{})
		go func() {
			io.Copy(&out, master)
			close(copied)
		}()
		if _, err := master.Write([]byte("hi\r")); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		<-copied
		if err != nil {
			t.Fatalf("crictl exec -it: %v; output %q", err, out.String())
		}
		checkTTYOutput(t, out.String())
	})

	t.Run("port-forward", func(t *testing.T) {
		cmd, cancel := k.crictlCmd(t, "port-forward", "box", "0:8080")
		defer cancel()
		// Its output comes line by line through a pipe of ours.
		out, w := io.Pipe()
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = w, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Its exit ends the scan below.
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			w.Close()
			close(exited)
		}()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		// "Forwarding from 127.0.0.1:PORT -> 8080" once it listens.
		var port int
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if _, err := fmt.Sscanf(sc.Text(), "Forwarding from 127.0.0.1:%d -> 8080", &port); err == nil {
				break
			}
		}
		if port == 0 {
			t.Fatalf("crictl port-forward never listened: %v; stderr: %s", sc.Err(), stderr.String())
		}
		go io.Copy(io.Discard, out)
		eventually(t, settle, "httpd through crictl port-forward", func() error {
			body, err := httpGet(t.Context(), fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				return err
			}
			if body != "hello from box\n" {
				return fmt.Errorf("body %q", body)
			}
			return nil
		})
	})
}

// forward forwards a free local port to port through the port-forward
// URL u with client-go's portforward, as kubectl port-forward does, until
// the test ends; it returns the local port.
func forward(t *testing.T, u string, port int) uint16 {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, parsed)
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut bytes.Buffer
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port forward: %v; %s", err, errOut.String())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("forwarded ports %v, %v", ports, err)
	}
	return ports[0].Local
}

func httpGet(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
