package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/keel-runtime/keel/client"
	"github.com/keel-runtime/keel/sdk/content"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestSnapshotterRestart: a snapshotter plugin killed with SIGKILL is
// restarted by keeld, and its snapshots are all still there.
func TestSnapshotterRestart(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	k.ok("snapshot", "prepare", "a-active")
	k.ok("snapshot", "commit", "a", "a-active")
	k.ok("snapshot", "prepare", "b", "a")
	before := k.ok("snapshot", "ls", "-q")

	old := k.plugins()["snapshotter.native"]
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p := k.waitRestarted("snapshotter.native", old.Pid)
	if p.Restarts != 1 {
		t.Errorf("snapshotter.native restarted: restarts %d, want 1", p.Restarts)
	}
	if alive(old.Pid) {
		t.Errorf("the killed plugin (pid %d) is still there", old.Pid)
	}
	// The content plugin was not touched.
	if c := k.plugins()["content.local"]; c.Restarts != 0 || c.State != "running" {
		t.Errorf("content.local after the snapshotter's restart: %+v", c)
	}

	if got := k.ok("snapshot", "ls", "-q"); got != before || got != "a\nb\n" {
		t.Errorf("snapshot ls after the restart: %q, before %q", got, before)
	}
	k.ok("snapshot", "commit", "b-1", "b")
	if got := k.ok("snapshot", "tree"); got != "a (committed)\n  b-1 (committed)\n" {
		t.Errorf("tree after the restart:\n%s", got)
	}
}

// TestContentKilledMidIngest: an ingest in flight when the content plugin
// dies fails Unavailable, with an error naming the plugin, through the Go
// client and through the CLI; keeld restarts the plugin and the next ingest
// works.
func TestContentKilledMidIngest(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := k.client(t, "default")
	cs := c.ContentStore()

	t.Run("client", func(t *testing.T) {
		k := k.with(t)
		data := randomBytes(t, 4<<20)
		w, err := cs.Writer(ctx, content.WithRef("in-flight"))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Write(data[:1<<20]); err != nil {
			t.Fatal(err)
		}
		waitOffset(t, cs, "in-flight")

		old := k.plugins()["content.local"]
		if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, err = w.Write(data[1<<20:])
		if err == nil {
			err = w.Commit(ctx, int64(len(data)), digest.FromBytes(data))
		}
		if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "content.local") {
			t.Errorf("ingest across the plugin's death: %v, want Unavailable naming content.local", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans lines: %q", err)
		}
		k.waitRestarted("content.local", old.Pid)
	})

	t.Run("cli", func(t *testing.T) {
		k := k.with(t)
		data := randomBytes(t, 4<<20)
		cmd := exec.Command(binDir+"/keel", "--address", k.env.socket, "content", "ingest", "cli-in-flight")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		wrote := make(chan error, 1)
		go func() {
			_, err := stdin.Write(data[:2<<20])
			wrote <- err
		}()
		waitOffset(t, cs, "cli-in-flight")

		old := k.plugins()["content.local"]
		if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Let the CLI see the break before it has all its input.
		k.waitRestarted("content.local", old.Pid)
		if err := <-wrote; err == nil {
			_, _ = stdin.Write(data[2<<20:]) // may fail: the CLI may be gone
		}
		stdin.Close()
		err = cmd.Wait()
		r := result{args: cmd.Args[1:], stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
		if err == nil {
			t.Fatalf("ingest across the plugin's death succeeded; %v", r)
		}
		if msg := oneLineError(t, r); !strings.Contains(msg, "content.local") {
			t.Errorf("CLI error %q, want it to name content.local", msg)
		}
	})

	// keeld restarted the plugin each time; ingest works again.
	p := k.plugins()["content.local"]
	if p.State != "running" || p.Restarts != 2 {
		t.Errorf("content.local after two kills: %+v, want running with 2 restarts", p)
	}
	data := []byte("after the restarts")
	if r := k.keelIn(bytes.NewReader(data), "content", "ingest", "after"); r.code != 0 {
		t.Fatal(r)
	}
	if got := k.ok("content", "get", digest.FromBytes(data).String()); got != string(data) {
		t.Errorf("get after the restarts: %q", got)
	}
}

// waitRestarted waits until the plugin id runs again in a process other
// than oldPid, and returns its status.
func (k *keeld) waitRestarted(id string, oldPid int) client.Plugin {
	k.t.Helper()
	var p client.Plugin
	eventually(k.t, settle, id+" restarted", func() error {
		p = k.plugins()[id]
		if p.State != "running" || p.Pid == 0 || p.Pid == oldPid {
			return fmt.Errorf("%+v", p)
		}
		return nil
	})
	return p
}

// waitOffset waits until the ingest ref has bytes in the plugin.
func waitOffset(t *testing.T, cs content.Store, ref string) {
	t.Helper()
	eventually(t, settle, "ingest "+ref+" under way", func() error {
		st, err := cs.Status(context.Background(), ref)
		if err != nil {
			return err
		}
		if st.Offset == 0 {
			return io.ErrNoProgress
		}
		return nil
	})
}
