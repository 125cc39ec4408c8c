package shim

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// TestMain: run as `<test binary> shim DIR` with KEEL_FAKE_SHIM set, the
// binary stands for a shim of an older plugin (one that wrote only its
// pid): it sleeps.
func TestMain(m *testing.M) {
	if os.Getenv("KEEL_FAKE_SHIM") != "" && len(os.Args) == 3 && os.Args[1] == Arg {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startFake runs a fake shim for dir; it is killed
// when the test ends.
func startFake(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], Arg, dir)
	cmd.Env = append(os.Environ(), "KEEL_FAKE_SHIM=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestProcessAlive(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	ended := startFake(t, t.TempDir())
	endedProc := Process{Pid: ended.Process.Pid}
	if p, err := processOf(ended.Process.Pid); err == nil {
		endedProc = p
	}
	ended.Process.Kill()
	ended.Wait()
	zombie := startFake(t, t.TempDir())
	zombieProc, err := processOf(zombie.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	zombie.Process.Kill() // not reaped: a zombie until the cleanup's Wait
	// Wait for its exit, leaving it unreaped (WNOWAIT).
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, zombie.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		p    Process
		want bool
	}{
		{"this process", self, true},
		{"its pid with another start time (a reused pid)", Process{Pid: self.Pid, StartTime: self.StartTime + 1}, false},
		{"an ended process", endedProc, false},
		{"a zombie", zombieProc, false},
		{"no pid", Process{}, false},
	} {
		if got, err := c.p.Alive(); got != c.want || err != nil {
			t.Errorf("%s: Alive() = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// TestLoadProcess: the record the shim writes is read back; a shim of an
// older plugin (its pid only) is recognised by its command line and
// recorded; a pid that runs something else is not taken for the shim.
func TestLoadProcess(t *testing.T) {
	recorded := t.TempDir()
	if err := writeProcess(recorded); err != nil {
		t.Fatal(err)
	}
	legacy := t.TempDir()
	fake := startFake(t, legacy)
	os.WriteFile(filepath.Join(legacy, PidFile), []byte(strconv.Itoa(fake.Process.Pid)), 0o600)
	reused := t.TempDir()
	os.WriteFile(filepath.Join(reused, PidFile), []byte(strconv.Itoa(os.Getpid())), 0o600)

	for _, c := range []struct {
		name, dir string
		alive     bool
	}{
		{"recorded", recorded, true},
		{"pid only, a shim for this dir", legacy, true},
		{"pid only, reused by another process", reused, false},
		{"never started", t.TempDir(), false},
	} {
		p, err := LoadProcess(c.dir)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if alive, _ := p.Alive(); alive != c.alive {
			t.Errorf("%s: %+v alive %v, want %v", c.name, p, alive, c.alive)
		}
	}
	if _, err := os.Stat(filepath.Join(legacy, ProcessFile)); err != nil {
		t.Errorf("the recognised shim was not recorded: %v", err)
	}
}

// TestProcStatAgreesWithProcfs: the shim's own reading of /proc/<pid>/stat
// finds what prometheus/procfs finds, for this process and a child whose
// command holds a space and parentheses.
func TestProcStatAgreesWithProcfs(t *testing.T) {
	odd := filepath.Join(t.TempDir(), "a) b (c")
	if err := os.Symlink(os.Args[0], odd); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(odd, Arg, t.TempDir())
	child.Env = append(os.Environ(), "KEEL_FAKE_SHIM=1")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	for _, pid := range []int{os.Getpid(), child.Process.Pid} {
		state, start, err := procStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		p, err := procfs.NewProc(pid)
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if state != st.State || start != st.Starttime {
			t.Errorf("pid %d (%s): state %s, start %d; procfs: %s, %d", pid, st.Comm, state, start, st.State, st.Starttime)
		}
	}
}
