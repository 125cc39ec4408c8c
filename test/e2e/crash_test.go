package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
)

// The crash trials' knobs: `make faults` runs 20 trials per process kind;
// `make test` a short sample. A failing trial prints the seed; rerun it
// with KEEL_FAULT_SEED=<seed> -run 'TestCrash/<kind>'.
const (
	trialsEnv = "KEEL_FAULT_TRIALS"
	seedEnv   = "KEEL_FAULT_SEED"
)

// faultTrials is how many trials each process kind gets.
func faultTrials(t *testing.T) int {
	s := os.Getenv(trialsEnv)
	if s == "" {
		return 2
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", trialsEnv, s)
	}
	return n
}

// faultSeed is the trials' seed: KEEL_FAULT_SEED, else the clock.
func faultSeed(t *testing.T) uint64 {
	if s := os.Getenv(seedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// crashKinds are the processes the trials kill, each with the operations
// it takes part in (keeld takes part in all of them).
var crashKinds = []struct {
	name string
	ops  []string
}{
	{"keeld", []string{"pull", "push", "import", "export", "run", "exec", "commit", "gc"}},
	{"content", []string{"pull", "push", "import", "export", "gc"}},
	{"snapshotter", []string{"pull", "import", "run", "commit", "gc"}},
	{"resolver", []string{"pull", "push"}},
	{"runtime", []string{"run", "exec"}},
	{"shim", []string{"run", "exec"}},
}

// pluginIDs are the plugins of the trials' keeld, by process kind.
var pluginIDs = map[string]string{
	"content":     "content.local",
	"snapshotter": "snapshotter.native",
	"resolver":    "resolver.docker",
	"runtime":     "runtime.runc",
}

// TestCrash: SIGKILL of keeld, of each plugin and of a shim at a random
// point of an operation. After each kill the killed process is back (keeld
// restarts its plugins; the test restarts keeld), `keel check` finds
// nothing but the garbage a crash leaves by design (checkAfterCrash), the
// interrupted operation retried succeeds, and after a collection `keel
// check` is clean. The seed picks each trial's operation and delay; the
// machine's timing still varies, so a replay retries the same points, not
// always the same interleaving.
func TestCrash(t *testing.T) {
	t.Parallel()
	trials, seed := faultTrials(t), faultSeed(t)
	t.Logf("crash trials: %d per process kind, %s=%d", trials, seedEnv, seed)
	for _, kind := range crashKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			h := fnv.New64a()
			h.Write([]byte(kind.name))
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
			c := newCrashEnv(t)
			tally := map[string]int{}
			for i := range trials {
				op := kind.ops[rng.IntN(len(kind.ops))]
				outcome := c.trial(t, i, kind.name, op, rng)
				tally[outcome]++
				if t.Failed() {
					t.Fatalf("trial %d (%s killed during %s) failed; reproduce with %s=%d -run 'TestCrash/%s'",
						i, kind.name, op, seedEnv, seed, kind.name)
				}
			}
			t.Logf("%s: %d trials: %v; after every kill keel check found nothing but collectable garbage, after every retry (and gc) nothing",
				kind.name, trials, tally)
		})
	}
}

// crashEnv is a keeld with every plugin kind and an image to work on:
// big (busybox and an 8 MiB incompressible layer) in the registry and as
// an OCI archive, and busybox pulled for containers.
type crashEnv struct {
	k       *runKeeld
	big     string // big's reference in the registry
	archive string // big exported
	// took is how long each operation last took to succeed: kills fall
	// within it.
	took map[string]time.Duration
	// host is the container the exec trials run in, hosts how many there
	// were: each is new, as `keel container rm` leaves the rootfs snapshot
	// to the collection it starts, which a new container of the same id
	// may race.
	host  string
	hosts int
}

func newCrashEnv(t *testing.T) *crashEnv {
	k := startRunKeeld(t, "")
	img, err := registry.BuildImage(registry.ImageOptions{Arch: runtime.GOARCH, Extra: randomBytes(t, 8<<20)})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.reg.PushImage(t.Context(), "e2e/big", "v1", img); err != nil {
		t.Fatal(err)
	}
	c := &crashEnv{k: k, big: k.reg.Host + "/e2e/big:v1", archive: filepath.Join(k.env.dir, "big.tar"),
		took: map[string]time.Duration{}}
	k.ok("lease", "create", "--id", "crash")
	k.okWithin(2*time.Minute, "image", "pull", "-q", c.big)
	k.ok("image", "export", c.archive, c.big)
	return c
}

// trial runs op, kills a process of kind at a random point of it, and
// checks what follows. It returns how the operation ended: "interrupted"
// (it failed) or "completed" (the kill came after it was done, or did
// not touch it).
func (c *crashEnv) trial(t *testing.T, i int, kind, op string, rng *rand.Rand) string {
	t.Helper()
	k := c.k
	args := c.prepare(t, i, op)
	window := c.took[op]
	if window == 0 {
		window = time.Second
	}
	delay := time.Duration(rng.Int64N(int64(window)))

	bg := startKeel(t, k.env.socket, args...)
	var victim, init int
	switch kind {
	case "keeld":
		victim = k.cmd.Process.Pid
		time.Sleep(delay)
		k.kill()
	case "shim":
		victim, init = c.shimOf(t, op, i, bg)
		if victim != 0 {
			time.Sleep(delay / 2)
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatal(err)
			}
		}
	default:
		victim = k.plugins()[pluginIDs[kind]].Pid
		time.Sleep(delay)
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	r := bg.wait(t, 2*settle)
	outcome := "completed"
	if r.code != 0 {
		outcome = "interrupted"
	}
	t.Logf("trial %d: %s (pid %d) killed %s into %s: %s (exit %d) %s", i, kind, victim,
		delay.Round(time.Millisecond), op, outcome, r.code, firstLine(r.stderr))

	switch kind {
	case "keeld":
		c.k = k.restart(t)
		k = c.k
	case "shim":
		// Nothing restarts a shim: the retry starts a new task.
	default:
		k.waitRestarted(pluginIDs[kind], victim)
	}
	if kind == "shim" || kind == "runtime" {
		// A shim's death is seen once its process is gone, not when its
		// connection breaks (the socket closes before the process ends):
		// until then its task is unknown.
		eventually(t, settle, "no task unknown after the kill", func() error {
			for id, r := range k.tasks() {
				if r.Status == "unknown" {
					return fmt.Errorf("task %s: %s", id, r.Reason)
				}
			}
			return nil
		})
	}
	garbage := k.checkAfterCrash(t, kind, fmt.Sprintf("after the kill of trial %d", i))
	start := time.Now()
	c.retry(t, i, op, args)
	c.took[op] = time.Since(start)
	if garbage > 0 {
		outcome += ", garbage collected"
	}
	// What the crash left, and what a collection keeld started in the
	// background may not have finished, goes.
	k.ok("gc", "--ingests")
	if init != 0 {
		// The container whose shim died was removed by the retry: none of
		// its processes is left.
		eventually(t, settle, "the processes of a container whose shim was killed gone", func() error {
			if alive(init) {
				return fmt.Errorf("pid %d (the task of trial %d) still runs", init, i)
			}
			return nil
		})
	}
	k.cleanOrRepaired(t, fmt.Sprintf("after the retry of trial %d", i))
	return outcome
}

// prepare readies trial i of op and returns the keel arguments that run it.
func (c *crashEnv) prepare(t *testing.T, i int, op string) []string {
	t.Helper()
	k := c.k
	switch op {
	case "pull", "import":
		// big goes, so the operation has it all to do again.
		k.ok("image", "rm", c.big)
		k.ok("gc")
		if op == "pull" {
			return []string{"image", "pull", "-q", c.big}
		}
		return []string{"image", "import", c.archive}
	case "push":
		return []string{"image", "push", fmt.Sprintf("%s/e2e/pushed-%d:v1", k.reg.Host, i), c.big}
	case "export":
		return []string{"image", "export", filepath.Join(k.env.dir, fmt.Sprintf("export-%d.tar", i)), c.big}
	case "run":
		return []string{"run", "--rm", k.ref, fmt.Sprintf("run-%d", i), "sh", "-c", "sleep 1; echo hi"}
	case "exec":
		c.execHost(t)
		return []string{"task", "exec", c.host, "sh", "-c", "sleep 1; echo hi"}
	case "commit":
		active := fmt.Sprintf("active-%d", i)
		k.ok("--lease", "crash", "snapshot", "prepare", active)
		return []string{"--lease", "crash", "snapshot", "commit", fmt.Sprintf("committed-%d", i), active}
	case "gc":
		// Something to collect: a blob and a committed snapshot no lease
		// or image holds.
		k.keelIn(bytes.NewReader(randomBytes(t, 1<<20)), "content", "ingest", fmt.Sprintf("loose-%d", i))
		k.ok("snapshot", "prepare", fmt.Sprintf("loose-%d-active", i))
		k.ok("snapshot", "commit", fmt.Sprintf("loose-%d", i), fmt.Sprintf("loose-%d-active", i))
		return []string{"gc"}
	}
	t.Fatalf("unknown operation %q", op)
	return nil
}

// retry runs op again after the crash, as an operator would (removing what
// a killed `keel run` left), and fails the test unless it succeeds.
func (c *crashEnv) retry(t *testing.T, i int, op string, args []string) {
	t.Helper()
	k := c.k
	switch op {
	case "run":
		id := fmt.Sprintf("run-%d", i)
		if strings.Contains(k.ok("container", "ls", "-q"), id+"\n") {
			k.ok("container", "rm", "--force", id)
		}
		// container rm removes the rootfs snapshot made for it, but a run
		// killed before it made its container leaves that snapshot to the
		// collection (its lease may still be live; another run of the
		// same id may be about to use it), which blocks a new container
		// of the same id until then, as in containerd: collect first.
		if k.keel("snapshot", "info", id).code == 0 {
			t.Logf("trial %d: the rootfs snapshot %s outlived its container; collecting it before the retry", i, id)
			k.ok("gc")
		}
	case "exec":
		c.execHost(t)
		args = slices.Clone(args)
		args[2] = c.host
	case "commit":
		name := args[len(args)-2]
		if k.keel("--lease", "crash", "snapshot", "info", name).code == 0 {
			// The commit was done before the kill; the active one is gone.
			if r := k.keel("snapshot", "info", args[len(args)-1]); r.code == 0 {
				t.Errorf("both %s and the active snapshot it was committed from exist", name)
			}
			return
		}
	}
	r := runKeelWithin(t, k.env.socket, nil, 2*time.Minute, args...)
	if r.code != 0 {
		t.Errorf("retry of %s after the crash: %v", op, r)
		return
	}
	switch op {
	case "run", "exec":
		if r.stdout != "hi\n" {
			t.Errorf("retry of %s printed %q, want \"hi\\n\"", op, r.stdout)
		}
	case "gc":
		var rep struct{ Removed []any }
		k.okJSON(&rep, "gc", "--dry-run")
		if len(rep.Removed) != 0 {
			t.Errorf("gc --dry-run after a gc: would remove %v", rep.Removed)
		}
	}
}

// execHost makes sure the exec trials' container has a running task (a
// killed shim ended the last one), in a new container if need be.
func (c *crashEnv) execHost(t *testing.T) {
	t.Helper()
	k := c.k
	if c.host != "" && k.tasks()[c.host].Status == "running" {
		return
	}
	if c.host != "" {
		k.ok("container", "rm", "--force", c.host)
	}
	c.hosts++
	c.host = fmt.Sprintf("host-%d", c.hosts)
	k.ok("run", "-d", k.ref, c.host, "/bin/busybox", "sleep", "100000")
}

// shimOf waits for the task op works on and returns its shim's pid and
// the task's, or zeros if the operation ended before there was a task.
func (c *crashEnv) shimOf(t *testing.T, op string, i int, bg *bgKeel) (shim, init int) {
	t.Helper()
	id := c.host
	if op == "run" {
		id = fmt.Sprintf("run-%d", i)
	}
	for {
		if r := c.k.tasks()[id]; r.Pid != 0 && r.Status == "running" {
			return ppid(t, int(r.Pid)), int(r.Pid)
		}
		select {
		case <-bg.done:
			return 0, 0
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cleanOrRepaired fails the test unless `keel check` is clean. What it
// reports is then repaired, so later trials see only their own damage.
func (k *keeld) cleanOrRepaired(t *testing.T, when string) {
	t.Helper()
	if rep, r := k.with(t).check(); r.code != 0 {
		t.Errorf("keel check %s: %+v", when, rep)
		k.repair(t)
	}
}

// checkAfterCrash runs `keel check` right after a crash of kind and fails
// the test for any problem but the garbage a crash leaves by design,
// which the next collection takes: a blob or snapshot a plugin made whose
// record the crash kept keeld from writing, a partial ingest whose pull
// or import died (kept so a retry resumes it), and, after a shim's
// death (or the runtime's, which a create it was making does not outlive),
// its task, stopped with the reason. It returns how many of those it saw.
func (k *keeld) checkAfterCrash(t *testing.T, kind, when string) int {
	t.Helper()
	rep, r := k.with(t).check()
	if r.code == 0 {
		return 0
	}
	garbage := 0
	for _, p := range rep.Problems {
		switch {
		case p.Kind == "blob" && strings.HasPrefix(p.Problem, "in the content plugin, but no namespace records it"),
			p.Kind == "snapshot" && strings.HasPrefix(p.Problem, "in the plugin, but no record refers to it"),
			p.Kind == "ingest" && strings.HasPrefix(p.Problem, "partial ingest no lease holds"),
			p.Kind == "task" && (kind == "shim" || kind == "runtime") && strings.HasPrefix(p.Problem, "its shim died"):
			garbage++
		default:
			t.Errorf("keel check %s: %s %s: %s (fix: %s)", when, p.Kind, p.Object, p.Problem, p.Fix)
		}
	}
	if len(rep.Errors) > 0 || garbage == 0 {
		t.Errorf("keel check %s: %v", when, r)
	}
	if t.Failed() {
		k.repair(t)
	}
	return garbage
}

// repair runs `keel check --repair`, so that the next trials see only
// their own damage; it stops the test if problems are left.
func (k *keeld) repair(t *testing.T) {
	t.Helper()
	if r := runKeelWithin(t, k.env.socket, nil, 2*time.Minute, "check", "--repair"); r.code != 0 {
		t.Fatalf("keel check --repair: %v", r)
	}
}

// bgKeel is a keel command running in the background.
type bgKeel struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

func startKeel(t *testing.T, socket string, args ...string) *bgKeel {
	t.Helper()
	b := &bgKeel{done: make(chan struct{})}
	b.cmd = exec.Command(filepath.Join(binDir, "keel"), append([]string{"--address", socket}, args...)...)
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
	})
	return b
}

// wait waits for the command; one that outlives timeout after its keeld
// or plugin died hangs, which fails the test.
func (b *bgKeel) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(timeout):
		b.cmd.Process.Kill()
		<-b.done
		t.Fatalf("keel %s still ran %s after the kill", strings.Join(b.cmd.Args[3:], " "), timeout)
	}
	r := result{args: b.cmd.Args[3:], stdout: b.stdout.String(), stderr: b.stderr.String()}
	var exit *exec.ExitError
	switch {
	case b.err == nil:
	case errors.As(b.err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("keel %s: %v", strings.Join(r.args, " "), b.err)
	}
	return r
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
