package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// TestReadme runs what README.md shows a new user, literally and in order,
// so that the README cannot drift from what keel does: the commands of the
// "Using keel" block, with the demo flow of scripts/demo.sh (its lines
// between "readme-test: begin" and "readme-test: end", which build a
// busybox image, push it to the registry, pull it back and run it) after
// the block's first line, which starts keeld, since the block pulls what
// the demo pushed.
//
// What the test changes, and nothing else:
//   - It runs everything in a private mount namespace with fresh tmpfs over
//     /var/lib/keel, /run/keel and /etc/keel, so keeld's defaults (and the
//     CLI's default socket) are used as written without touching the host's.
//   - The registry is the test's loopback registry: 127.0.0.1:5000 is
//     replaced by its host:port wherever it appears.
//   - The line that starts keeld runs in the background (a user gives it a
//     terminal of its own), and the next line waits until keeld answers.
//   - The commands run in a scratch directory where bin/ is $KEEL_BIN and
//     blob.tar (which the README ingests) is a small tar; the interactive
//     `keel run -t … sh` reads a few shell lines from the test.
func TestReadme(t *testing.T) {
	if os.Geteuid() != 0 {
		testkit.SkipOrFail(t, "needs root: keeld mounts and runs containers")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testkit.SkipOrFail(t, "unshare(1) not found: %v", err)
	}
	for _, bin := range []string{"runc", "docker-registry", "/bin/busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.SkipOrFail(t, "%s: %v (apt-get install runc docker-registry busybox-static)", bin, err)
		}
	}
	root := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block, err := readmeBlock(string(readme), "## Using keel")
	if err != nil {
		t.Fatal(err)
	}
	demo, err := os.ReadFile(filepath.Join(root, "scripts/demo.sh"))
	if err != nil {
		t.Fatal(err)
	}
	flow, err := demoFlow(string(demo))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(block[0], "bin/keeld") {
		t.Fatalf("the README's block starts with %q, not keeld", block[0])
	}

	reg := startRegistry(t)
	e := newEnv(t)
	work := filepath.Join(e.dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binDir, filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "blob.tar"), smallTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/tmp/box2.log") })
	for _, d := range defaultDirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(d) })
	}

	var script strings.Builder
	script.WriteString(readmePreamble)
	// keeld's default config, with the tests' network block (no default
	// route, no masquerade, a bridge of the test's own) as
	// /etc/keel/config.hcl, which the README's keeld reads.
	defaultHCL, err := os.ReadFile(filepath.Join(root, "core/config/default.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	script.WriteString("cat > /etc/keel/config.hcl <<'KEEL_CONFIG'\n" + string(defaultHCL) + testNetwork(t, e.root) + "KEEL_CONFIG\n")
	keeldLine, _, _ := strings.Cut(block[0], " #")
	script.WriteString(strings.TrimSpace(keeldLine) + ` >"$LOG" 2>&1 &` + "\nkeeld_pid=$!\nwait_keeld\n")
	script.WriteString("(\n" + flow + "\n) </dev/null\n")
	for _, line := range block[1:] {
		script.WriteString(line + "\n")
	}
	text := strings.ReplaceAll(script.String(), "127.0.0.1:5000", reg.Host)

	log := filepath.Join(e.dir, "keeld-readme.log")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private", "bash", "-c", text)
	cmd.Dir = work
	cmd.Env = append(withoutEnv(os.Environ(), "KEEL_ADDRESS", "KEEL_NAMESPACE", "KEEL_LEASE"), "LOG="+log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Stdin = strings.NewReader("echo hi from box1\nexit\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("script:\n%s\nstdout:\n%s\nstderr (a trace of each command):\n%s\nkeeld log:\n%s", text, stdout.String(), stderr.String(), b)
		}
	}()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Contains(stderr.String(), "unshare failed") {
			testkit.SkipOrFail(t, "no mount namespace here: %s", stderr.String())
		}
		t.Fatalf("the README's commands: %v (the trace below shows the one that failed)", err)
	}
	for _, want := range []string{
		"hello from a keel container", // the demo's run
		"\nhi from box1",              // the interactive run (not its echoed input)
		"\nbox2 up\n",                 // keel logs box2
		"sleep 600",                   // task exec box2 ps
		"busybox",                     // ls /mnt/bin of the mounted image
		" passed, 0 failed",           // the conformance run
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
}

// readmePreamble sets the stage inside the mount namespace and, on exit,
// removes the containers left and stops keeld.
const readmePreamble = `set -euo pipefail
for d in /var/lib/keel /run/keel /etc/keel; do
  mount -t tmpfs -o mode=0755 keel-readme "$d"
done
keeld_pid=
wait_keeld() {
  for _ in $(seq 400); do
    bin/keel version >/dev/null 2>&1 && return 0
    kill -0 "$keeld_pid" 2>/dev/null || { echo "keeld exited" >&2; return 1; }
    sleep 0.05
  done
  echo "keeld did not answer" >&2
  return 1
}
cleanup() {
  rc=$?
  set +e +x
  umount /mnt 2>/dev/null
  for id in $(bin/keel container ls -q 2>/dev/null); do bin/keel container rm --force "$id" >&2; done
  if [ -n "$keeld_pid" ]; then kill -TERM "$keeld_pid"; wait "$keeld_pid"; fi
  exit $rc
}
trap cleanup EXIT
set -x
`

// readmeBlock is the lines of the first sh code block after heading.
func readmeBlock(readme, heading string) ([]string, error) {
	body, err := readmeFence(readme, heading, "sh")
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, errors.New("README.md: empty block under " + heading)
	}
	return lines, nil
}

// readmeFence is the text of the first code block of language lang after
// heading.
func readmeFence(readme, heading, lang string) (string, error) {
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	if !ok {
		return "", errors.New("README.md has no " + heading)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		return "", errors.New("README.md: no " + lang + " block under " + heading)
	}
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		return "", errors.New("README.md: unterminated block under " + heading)
	}
	return body, nil
}

// demoFlow is scripts/demo.sh's flow: its keel, registry and image
// assignments, then its lines between the readme-test markers.
func demoFlow(demo string) (string, error) {
	var b strings.Builder
	assign := regexp.MustCompile(`^(keel|registry|image)=`)
	in := false
	for _, l := range strings.Split(demo, "\n") {
		switch {
		case strings.HasPrefix(l, "# readme-test: begin"):
			in = true
		case strings.HasPrefix(l, "# readme-test: end"):
			if !in {
				break
			}
			return b.String(), nil
		case in || assign.MatchString(l):
			b.WriteString(l + "\n")
		}
	}
	return "", errors.New("scripts/demo.sh: no readme-test: begin … end markers")
}

// moduleRoot is the repository's root directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find the module root: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// smallTar is a tar of one file.
func smallTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := []byte("hello from the README\n")
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
