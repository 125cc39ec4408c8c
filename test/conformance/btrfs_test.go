package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/conformance"
	"github.com/keel-runtime/keel/sdk/conformance/runner"
	"github.com/keel-runtime/keel/sdk/conformance/snapshottest"
	"github.com/keel-runtime/keel/sdk/fixture"
	"github.com/keel-runtime/keel/sdk/testkit"
)

// btrfsBinary returns $KEEL_BIN/keel-snapshotter-btrfs, or builds it.
func btrfsBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("KEEL_BIN"); dir != "" {
		if p := filepath.Join(dir, "keel-snapshotter-btrfs"); fileExists(p) {
			return p
		}
	}
	bin := filepath.Join(t.TempDir(), "keel-snapshotter-btrfs")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/keel-runtime/keel/plugins/snapshotter-btrfs").CombinedOutput()
	if err != nil {
		t.Fatalf("build keel-snapshotter-btrfs: %v\n%s", err, out)
	}
	return bin
}

func TestSnapshotterBtrfsBinary(t *testing.T) {
	dir := fixture.LoopbackBtrfs(t)
	snapshottest.Run(conformance.Go(t), snapshottest.Binary(btrfsBinary(t), conformance.WithRootDir(dir)),
		conformance.WithRootDir(dir))
}

// loopState is what a loopback fixture may leave: btrfs mounts and
// attached loop devices whose backing file is under prefix.
func loopState(t *testing.T, prefix string) []string {
	t.Helper()
	var left []string
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], prefix) {
			left = append(left, "mount "+f[4])
		}
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			left = append(left, "loop device "+f+" on "+strings.TrimSpace(string(b)))
		}
	}
	return left
}

// childRuns tells whether a child of this process runs the binary bin.
func childRuns(bin string) bool {
	if p, err := filepath.EvalSymlinks(bin); err == nil {
		bin = p
	}
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range exes {
		if p, err := os.Readlink(exe); err != nil || p != bin {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "stat"))
		if err != nil {
			continue
		}
		// State and parent pid follow the parenthesised command name.
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
		if len(f) > 1 && f[0] != "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			return true
		}
	}
	return false
}

func requireLoopback(t *testing.T) {
	t.Helper()
	testkit.RequireRoot(t, "mount a loopback btrfs")
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		testkit.SkipOrFail(t, "needs mkfs.btrfs (btrfs-progs)")
	}
}

// TestLoopbackTeardown: after Close, or after a failure midway, no mount
// and no loop device is left.
func TestLoopbackTeardown(t *testing.T) {
	requireLoopback(t)
	for _, tc := range []struct {
		name    string
		size    int64
		options string
		wantErr bool
	}{
		{"ok", 512 << 20, fixture.ScratchMountOptions, false},
		{"mkfs fails", 1 << 20, "", true},
		{"mount fails", 512 << 20, "no_such_btrfs_option", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := fixture.NewLoopbackBtrfs(dir, tc.size, tc.options)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewLoopbackBtrfs: %v, want error %v", err, tc.wantErr)
			}
			if err == nil {
				if err := os.WriteFile(filepath.Join(l.Dir, "f"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if left := loopState(t, dir); len(left) != 2 {
					t.Errorf("while open: %q, want its mount and its loop device", left)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if left := loopState(t, dir); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			if _, err := os.Stat(filepath.Join(dir, "btrfs.img")); !os.IsNotExist(err) {
				t.Errorf("image left: %v", err)
			}
		})
	}
}

// TestRunCLIBtrfsAutoRoot: with no root given, the CLI run sees the btrfs
// plugin refuse a temp dir, makes a loopback btrfs, passes there, and
// takes the loopback down at the end.
func TestRunCLIBtrfsAutoRoot(t *testing.T) {
	requireLoopback(t)
	var out bytes.Buffer
	failed, err := runner.RunCLI("snapshotter", btrfsBinary(t), &out, "json",
		conformance.WithRun(regexp.MustCompile(`^(Lifecycle|LayerChain|Usage)$`)))
	if err != nil || failed {
		t.Fatalf("RunCLI = %v, %v\n%s", failed, err, out.String())
	}
	var rep runner.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Passed != 3 {
		t.Errorf("report: %+v, %v", rep, err)
	}
	if left := loopState(t, os.TempDir()+"/keel-conformance-btrfs-"); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
}

// TestRunCLIInterrupted: a run cancelled midway (Ctrl-C) stops, skips the
// rest and still takes its loopback btrfs down.
func TestRunCLIInterrupted(t *testing.T) {
	requireLoopback(t)
	bin := btrfsBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once the first case has its plugin running on the loopback.
		for ctx.Err() == nil {
			if len(loopState(t, os.TempDir()+"/keel-conformance-btrfs-")) > 0 && childRuns(bin) {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var out bytes.Buffer
	failed, err := runner.RunCLIContext(ctx, "snapshotter", bin, &out, "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep runner.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !failed && rep.Skipped == 0 || rep.Passed+rep.Failed >= len(rep.Cases) {
		t.Errorf("interrupted run ran everything: %d passed, %d failed, %d skipped", rep.Passed, rep.Failed, rep.Skipped)
	}
	if left := loopState(t, os.TempDir()+"/keel-conformance-btrfs-"); len(left) > 0 {
		t.Errorf("left behind: %q", left)
	}
}
