package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunSecurity: what a container may do under keel's defaults (Docker's
// seccomp profile and capabilities), and how run's flags change it, seen
// from inside real runc containers.
func TestRunSecurity(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	dir := t.TempDir()
	// A profile that allows all but mkdir, to tell a profile file applies.
	noMkdir := writeTemp(t, dir, "no-mkdir.json", []byte(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}`))
	envFile := writeTemp(t, dir, "app.env", []byte("# settings\nA=from file\n\n  B=two words \nPATH\nC=overridden\n"))

	const (
		status    = `grep -E "^(Seccomp|NoNewPrivs|CapEff):" /proc/self/status`
		userns    = "unshare -U true && echo unshared || exit 1"
		eperm     = "Operation not permitted"
		defCapEff = "CapEff:\t00000000a80425fb" // Docker's default 14
	)
	for _, tc := range []struct {
		name  string
		flags []string
		sh    string // run by sh -c
		code  int
		out   []string // each in stdout
		err   string   // in stderr
	}{
		{name: "default", sh: status, out: []string{"Seccomp:\t2", "NoNewPrivs:\t1", defCapEff}},
		// unshare(CLONE_NEWUSER) needs no capability: only the profile
		// (which allows unshare with CAP_SYS_ADMIN alone) refuses it.
		{name: "default blocks unshare", sh: userns, code: 1, err: eperm},
		{name: "unconfined", flags: []string{"--security-opt", "seccomp=unconfined"}, sh: status + " && " + userns, out: []string{"Seccomp:\t0", defCapEff, "unshared"}},
		{name: "privileged", flags: []string{"--privileged"}, sh: status + " && " + userns, out: []string{"Seccomp:\t0", "NoNewPrivs:\t0", "unshared"}},
		{name: "privileged no-new-privileges", flags: []string{"--privileged", "--security-opt", "no-new-privileges"}, sh: status, out: []string{"Seccomp:\t0", "NoNewPrivs:\t1"}},
		// The profile is made for the final capabilities.
		{name: "cap-add SYS_ADMIN allows unshare", flags: []string{"--cap-add", "SYS_ADMIN"}, sh: status + " && " + userns, out: []string{"Seccomp:\t2", "unshared"}},
		{name: "profile file", flags: []string{"--security-opt", "seccomp=" + noMkdir}, sh: "grep Seccomp: /proc/self/status; mkdir /made || exit 1", code: 1, out: []string{"Seccomp:\t2"}, err: eperm},
		{name: "no-new-privileges=false", flags: []string{"--security-opt", "no-new-privileges=false"}, sh: status, out: []string{"NoNewPrivs:\t0", "Seccomp:\t2"}},
		{name: "default chown", sh: "chown 1:1 /bin && echo chowned", out: []string{"chowned"}},
		{name: "cap-drop ALL", flags: []string{"--cap-drop", "ALL"}, sh: status + "; chown 1:1 /bin || exit 1", code: 1, out: []string{"CapEff:\t0000000000000000"}, err: eperm},
		{name: "cap-drop ALL cap-add chown", flags: []string{"--cap-drop", "ALL", "--cap-add", "cap_chown"}, sh: "chown 1:1 /bin && echo chowned", out: []string{"chowned"}},
		{name: "default no NET_ADMIN", sh: "ip link set lo mtu 1280 || exit 1", code: 1, err: eperm},
		{name: "cap-add NET_ADMIN", flags: []string{"--cap-add", "net_admin"}, sh: "ip link set lo mtu 1280 && cat /sys/class/net/lo/mtu", out: []string{"1280"}},
		{name: "device", flags: []string{"--device", "/dev/null:/dev/mynull"}, sh: "stat -c %F,%t,%T /dev/mynull && echo x > /dev/mynull && cat /dev/mynull && echo wrote", out: []string{"character special file,1,3", "wrote"}},
		// runc allows /dev/null's numbers anyway; loop-control is not
		// among its defaults (and needs no capability to open).
		{name: "device rules", flags: []string{"--device", "/dev/loop-control:/dev/lc:r"}, sh: "exec 3</dev/lc && echo read; exec 4<>/dev/lc || exit 1", code: 1, out: []string{"read"}, err: eperm},
		{name: "device rw", flags: []string{"--device", "/dev/loop-control:/dev/lc"}, sh: "exec 4<>/dev/lc && echo opened", out: []string{"opened"}},
		{name: "no device", sh: "test -e /dev/lc || echo none", out: []string{"none"}},
		{name: "env-file", flags: []string{"--env-file", envFile, "--env", "C=flag"}, sh: `echo "A=$A;B=$B;C=$C;PATH=$PATH"`, out: []string{"A=from file;B=two words ;C=flag;PATH=" + os.Getenv("PATH")}},
		{name: "read-only", flags: []string{"--read-only"}, sh: "touch /new || exit 1", code: 1, err: "Read-only file system"},
		{name: "writable", sh: "touch /new && echo touched", out: []string{"touched"}},
		// tini's mount point is made before the rootfs turns read-only.
		{name: "read-only init", flags: []string{"--read-only", "--init"}, sh: "touch /new || exit 1", code: 1, err: "Read-only file system"},
		{name: "init", flags: []string{"--init"}, sh: `tr "\0" " " < /proc/1/cmdline; echo; echo "me=$$ parent=$PPID"`, out: []string{"/sbin/keel-init -- sh -c", "parent=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "sec-" + strings.NewReplacer(" ", "-", "=", "-").Replace(strings.ToLower(tc.name))
			args := append([]string{"run", "--rm", "--net", "none"}, tc.flags...)
			r := k.keel(append(args, k.ref, id, "sh", "-c", tc.sh)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.err) {
				t.Fatalf("want exit %d and %q on stderr; %v", tc.code, tc.err, r)
			}
			for _, o := range tc.out {
				if !strings.Contains(r.stdout, o) {
					t.Errorf("want %q in stdout; %v", o, r)
				}
			}
			if tc.name == "init" && strings.Contains(r.stdout, "me=1 ") {
				t.Errorf("the command is PID 1, not tini's child; %v", r)
			}
		})
	}

	// Bad flags: one line naming what is wrong, and no container left.
	missing := filepath.Join(dir, "missing.json")
	badJSON := writeTemp(t, dir, "bad.json", []byte("{not json"))
	badEnv := writeTemp(t, dir, "bad.env", []byte("A=1\nB C=2\n"))
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--security-opt", "seccomp=" + missing}, missing},
		{[]string{"--security-opt", "seccomp=" + badJSON}, "seccomp profile " + badJSON + ": "},
		{[]string{"--security-opt", "apparmor=unconfined"}, "no AppArmor or SELinux support"},
		{[]string{"--security-opt", "bogus"}, "unknown option"},
		{[]string{"--cap-add", "CAP_NOPE"}, `capability "CAP_NOPE": no such capability`},
		{[]string{"--device", "/dev/no-such-device"}, "/dev/no-such-device"},
		{[]string{"--device", dir}, "not a device node"},
		{[]string{"--env-file", badEnv}, "env file " + badEnv + ":2: "},
		{[]string{"--env-file", missing}, missing},
	} {
		r := k.keel(append(append([]string{"run", "--rm", "--net", "none"}, tc.flags...), k.ref, "sec-bad", "true")...)
		if msg := oneLineError(t, r); !strings.Contains(msg, tc.want) {
			t.Errorf("%v: %q, want %q", tc.flags, msg, tc.want)
		}
	}
	if out := k.ok("container", "ls", "-q"); out != "" {
		t.Errorf("containers left: %q", out)
	}
}

// TestRunStdin: stdin reaches the process with -i only; without it the
// process reads EOF at once, even while keel's own stdin stays open.
func TestRunStdin(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	r := k.keelIn(strings.NewReader("data\n"), "run", "--rm", "--net", "none", "-i", k.ref, "in", "sh", "-c", "cat")
	if r.code != 0 || r.stdout != "data\n" {
		t.Fatalf("-i: %v", r)
	}
	// A pipe keel's caller never closes: cat ends only if it was not given it.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := pw.WriteString("the caller's\n"); err != nil {
		t.Fatal(err)
	}
	r = k.keelIn(pr, "run", "--rm", "--net", "none", k.ref, "noin", "sh", "-c", "cat; echo eof")
	if r.code != 0 || r.stdout != "eof\n" {
		t.Fatalf("no -i: %v", r)
	}
	// task start and task exec take -i as run does; container create takes
	// run's spec flags.
	k.ok("container", "create", "--cap-drop", "ALL", "--init", k.ref, "created", "sh", "-c", "grep CapEff /proc/self/status; cat; echo eof")
	r = k.keelIn(strings.NewReader("typed\n"), "task", "start", "-i", "created")
	if r.code != 0 || r.stdout != "CapEff:\t0000000000000000\ntyped\neof\n" {
		t.Fatalf("task start -i: %v", r)
	}
	k.ok("run", "-d", "--net", "none", k.ref, "sleeper", "/bin/busybox", "sleep", "1000")
	if r = k.keelIn(pr, "task", "exec", "sleeper", "sh", "-c", "cat; echo eof"); r.code != 0 || r.stdout != "eof\n" {
		t.Fatalf("exec without -i: %v", r)
	}
	if r = k.keelIn(strings.NewReader("typed\n"), "task", "exec", "-i", "sleeper", "sh", "-c", "cat; echo eof"); r.code != 0 || r.stdout != "typed\neof\n" {
		t.Fatalf("exec -i: %v", r)
	}
	// -t without -i (as Docker's): a terminal, which nobody types in.
	r = k.keelIn(pr, "run", "--rm", "--net", "none", "-t", k.ref, "ttynoin", "sh", "-c", "test -t 0 && echo tty")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "tty" {
		t.Fatalf("-t without -i: %v", r)
	}
}

// TestRunInit: with --init, tini is PID 1 and passes a signal on to the
// command (a PID 1 sleep would ignore SIGTERM), so the run ends promptly.
func TestRunInit(t *testing.T) {
	t.Parallel()
	k := startRunKeeld(t, "")
	run := startKeel(t, k.env.socket, "run", "--rm", "--net", "none", "--init", k.ref, "initfg", "/bin/busybox", "sleep", "1000")
	eventually(t, settle, "tini and its sleep run", func() error {
		r := k.keel("task", "ps", "-q", "initfg")
		if n := len(strings.Fields(r.stdout)); r.code != 0 || n != 2 {
			return fmt.Errorf("%d processes: %v", n, r)
		}
		return nil
	})
	k.ok("task", "kill", "-s", "TERM", "initfg")
	select {
	case <-run.done:
	case <-time.After(settle):
		t.Fatal("keel run --init still runs after SIGTERM")
	}
	if code := run.cmd.ProcessState.ExitCode(); code != 143 {
		t.Fatalf("keel run --init: exit %d, want 143 (SIGTERM); stderr %q", code, run.stderr.String())
	}
}
