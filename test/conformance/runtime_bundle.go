package conformance

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/mount"
	"github.com/keel-runtime/keel/sdk/runtime"
)

// The runtime suite runs busybox containers it builds itself: no image, no
// registry. BusyboxRootfs and RuntimeSpec are exported for benchmarks and
// a plugin's own tests.

// BusyboxPath is where Debian's busybox-static installs a static busybox.
var BusyboxPath = "/bin/busybox"

// BusyboxRootfs makes dir a root filesystem holding a static busybox and a
// link per applet in /bin, and returns the mounts (one bind mount, as the
// native snapshotter hands out) a runtime puts it in place with.
func BusyboxRootfs(dir string) ([]mount.Mount, error) {
	bin := BusyboxPath
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("busybox")
		if lerr != nil {
			return nil, fmt.Errorf("busybox: %w (install busybox-static)", err)
		}
		bin = p
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := copyFile(bin, filepath.Join(dir, "bin", "busybox")); err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return nil, err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return []mount.Mount{{Type: "bind", Source: dir, Options: []string{"rbind", "rw"}}}, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// RuntimeSpec is sdk/runtime's DefaultSpec running args, with HOME=/root.
func RuntimeSpec(args ...string) *specs.Spec {
	s := runtime.DefaultSpec()
	s.Process.Args = args
	s.Process.Env = append(s.Process.Env, "HOME=/root")
	return s
}
