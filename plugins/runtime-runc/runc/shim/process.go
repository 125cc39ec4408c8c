package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ProcessFile, in a task's directory, names the shim process: see Process.
const ProcessFile = "shim.json"

// Process names a shim process beyond its pid, which the kernel reuses: a
// pid and the process's start time (clock ticks since boot, field 22 of
// /proc/<pid>/stat) name one process only. The plugin decides that a shim
// is dead by this alone, never by a call to it that was slow.
type Process struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Self is the calling process.
func Self() (Process, error) { return processOf(os.Getpid()) }

func processOf(pid int) (Process, error) {
	_, start, err := procStat(pid)
	if err != nil {
		return Process{}, err
	}
	return Process{Pid: pid, StartTime: start}, nil
}

// procStat reads the state (field 3) and the start time (field 22) of
// /proc/<pid>/stat. (By hand: prometheus/procfs costs every shim 0.3 MB.)
func procStat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	// The command, field 2, is in parentheses and may hold anything.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 20 {
		return "", 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return fields[0], start, nil
}

// Alive tells whether p still runs. A process that cannot be looked at for
// another reason than its absence counts as alive (the error says why): a
// shim is declared dead only when it is known to be.
func (p Process) Alive() (bool, error) {
	if p.Pid <= 0 {
		return false, nil
	}
	state, start, err := procStat(p.Pid)
	if err == nil {
		// A zombie has ended; a new process under the same pid is not
		// the shim.
		return state != "Z" && state != "X" && start == p.StartTime, nil
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return false, nil
	}
	return true, err
}

func (p Process) String() string { return "shim pid " + strconv.Itoa(p.Pid) }

// writeProcess records the calling shim in dir (see LoadProcess).
func writeProcess(dir string) error {
	self, err := Self()
	if err != nil {
		return err
	}
	// Not synced: the record names a live process, and after the
	// machine's crash no shim lives, which a missing or empty record says
	// as well as the old one (its start time no longer matches). Syncing
	// cost 5-25 ms of every create under load.
	return writeFileAtomic(filepath.Join(dir, ProcessFile), self, false)
}

// LoadProcess reads the shim process of the task directory dir. A shim of
// an older plugin recorded its pid only (PidFile): it is taken for the
// shim when that pid runs `shim dir`, and recorded with its start time.
// An absent shim yields a Process that is not alive.
func LoadProcess(dir string) (Process, error) {
	var p Process
	b, err := os.ReadFile(filepath.Join(dir, ProcessFile))
	if err == nil {
		if err := json.Unmarshal(b, &p); err != nil {
			return Process{}, fmt.Errorf("%s: %w", ProcessFile, err)
		}
		return p, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Process{}, err
	}
	b, err = os.ReadFile(filepath.Join(dir, PidFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Process{}, nil // never started
	}
	if err != nil {
		return Process{}, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return Process{}, fmt.Errorf("%s: %w", PidFile, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if err != nil || len(args) != 3 || args[1] != Arg || args[2] != dir {
		return Process{}, nil // gone, and its pid reused
	}
	if p, err = processOf(pid); err != nil {
		return Process{}, nil
	}
	writeFileSync(filepath.Join(dir, ProcessFile), p)
	return p, nil
}
