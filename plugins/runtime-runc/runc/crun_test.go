package runc_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/plugins/runtime-runc/runc"
	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runtimetest"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// envCrunNS marks the re-executed test binary that runs inside the private
// mount namespace prepared for crun.
const envCrunNS = "KEEL_TEST_CRUN_NS"

// TestConformanceCrun runs the runtime suite with crun as the runtime binary.
// crun 1.8 refuses a hybrid cgroup layout (v1 controllers plus a cgroup2
// beside them: "cgroups in hybrid mode not supported"), so the test re-executes
// itself in a private mount namespace where the cgroup2 mounts under
// /sys/fs/cgroup are unmounted; crun then sees pure v1. The plugin and its
// shims (this binary again) run in that namespace too.
func TestConformanceCrun(t *testing.T) {
	if os.Getenv(envCrunNS) != "" {
		if err := dropHybridCgroup2(); err != nil {
			t.Fatalf("prepare mount namespace for crun: %v", err)
		}
		config, err := json.Marshal(map[string]string{"runtime": "crun", "oci_version": "1.1.0"})
		if err != nil {
			t.Fatal(err)
		}
		runtimetest.Run(conformance.Go(t),
			runtimetest.InProcess(runc.New, conformance.WithConfig(config)))
		return
	}
	if _, err := exec.LookPath("crun"); err != nil {
		testkit.SkipOrFail(t, "crun is not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root for a mount namespace and containers")
	}
	// Go makes the new namespace's mounts private (MS_REC|MS_PRIVATE on /)
	// before exec, so the unmounts stay in it.
	cmd := exec.CommandContext(t.Context(), os.Args[0],
		"-test.run=^TestConformanceCrun$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrunNS+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Fatalf("suite with crun in a private mount namespace: %v\n%s", err, out.String())
	}
	// The child's verdicts, so a run shows which cases passed with crun.
	for _, line := range strings.Split(out.String(), "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "--- ") {
			t.Log(l)
		}
	}
}

// dropHybridCgroup2 unmounts every cgroup2 mounted below /sys/fs/cgroup when
// /sys/fs/cgroup itself is not cgroup2 (the hybrid layout). It must run in a
// private mount namespace.
func dropHybridCgroup2() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return fmt.Errorf("statfs /sys/fs/cgroup: %w", err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return nil // pure v2: crun accepts it as it is
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, fsFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fsFields) < 1 || fsFields[0] != "cgroup2" {
			continue
		}
		if strings.HasPrefix(fields[4], "/sys/fs/cgroup/") {
			targets = append(targets, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	for _, target := range targets {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return nil
}
