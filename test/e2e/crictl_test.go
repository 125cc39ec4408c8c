package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/testkit"
)

// crictlVersion is the cri-tools release whose crictl the tests build
// from the Go module proxy.
const crictlVersion = "v1.37.0"

var (
	crictlOnce sync.Once
	crictlPath string
	crictlErr  error
)

// crictl returns a crictl built once into the user's cache dir (kept
// across runs), or skips (fails, strict) when it cannot be built. The
// checksum database may not list cri-tools: that module alone is
// exempted.
func crictl(t *testing.T) string {
	t.Helper()
	crictlOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			crictlErr = err
			return
		}
		dir := filepath.Join(cache, "keel-test", "crictl-"+crictlVersion)
		crictlPath = filepath.Join(dir, "crictl")
		if _, err := os.Stat(crictlPath); err == nil {
			return
		}
		// Built into a temporary dir and renamed: a concurrent run never
		// sees half a binary.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			crictlErr = err
			return
		}
		tmp, err := os.MkdirTemp(dir, "build")
		if err != nil {
			crictlErr = err
			return
		}
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@"+crictlVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod", "GONOSUMDB=sigs.k8s.io/cri-tools", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			crictlErr = &buildError{err: err, out: string(out)}
			return
		}
		crictlErr = os.Rename(filepath.Join(tmp, "crictl"), crictlPath)
	})
	if crictlErr != nil {
		testkit.SkipOrFail(t, "build crictl %s: %v", crictlVersion, crictlErr)
	}
	return crictlPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// crictl runs crictl against k's keel-cri and returns its stdout,
// failing the test unless it exits 0.
func (k *criKeeld) crictl(t *testing.T, args ...string) string {
	t.Helper()
	return k.crictlIn(t, nil, args...)
}

// crictlIn is crictl with stdin.
func (k *criKeeld) crictlIn(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	cmd, cancel := k.crictlCmd(t, args...)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("crictl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// crictlCmd is the command of crictl args against k's keel-cri, bounded
// by a timeout that cancel ends.
func (k *criKeeld) crictlCmd(t *testing.T, args ...string) (*exec.Cmd, context.CancelFunc) {
	t.Helper()
	endpoint := "unix://" + k.socket
	full := append([]string{"--config", filepath.Join(k.env.dir, "crictl.yaml"), "--runtime-endpoint", endpoint,
		"--image-endpoint", endpoint, "--timeout", "60s"}, args...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	return exec.CommandContext(ctx, crictl(t), full...), cancel
}

// TestCrictl: cri-tools' crictl against keel-cri: version, info, pull,
// images, inspecti, imagefsinfo, rmi.
func TestCrictl(t *testing.T) {
	t.Parallel()
	k := startCRIKeeld(t, nil)
	crictl(t) // skip before anything else when it cannot be built
	if err := os.WriteFile(filepath.Join(k.env.dir, "crictl.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	repo := k.reg.Host + "/e2e/busybox"
	id := k.img.Config.Desc.Digest.String()

	if out := k.crictl(t, "version"); !strings.Contains(out, "RuntimeName:  keel") || !strings.Contains(out, "RuntimeApiVersion:  v1") {
		t.Errorf("crictl version:\n%s", out)
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status bool   `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	decode(t, k.crictl(t, "info"), &info)
	if len(info.Status.Conditions) != 2 || !info.Status.Conditions[0].Status || !info.Status.Conditions[1].Status {
		t.Errorf("crictl info: %+v", info)
	}

	if out := k.crictl(t, "pull", repo+":v1"); !strings.Contains(out, "Image is up to date for "+id) {
		t.Errorf("crictl pull:\n%s", out)
	}
	out := k.crictl(t, "images")
	short := strings.TrimPrefix(id, "sha256:")[:13]
	if !strings.Contains(out, repo) || !strings.Contains(out, "v1") || !strings.Contains(out, short) {
		t.Errorf("crictl images: want %s v1 %s in\n%s", repo, short, out)
	}
	var inspect struct {
		Status struct {
			ID       string   `json:"id"`
			RepoTags []string `json:"repoTags"`
		} `json:"status"`
	}
	decode(t, k.crictl(t, "inspecti", repo+":v1"), &inspect)
	if inspect.Status.ID != id || len(inspect.Status.RepoTags) != 1 || inspect.Status.RepoTags[0] != repo+":v1" {
		t.Errorf("crictl inspecti: %+v", inspect.Status)
	}
	var fsinfo struct {
		Status struct {
			ImageFilesystems []struct {
				FsID struct {
					Mountpoint string `json:"mountpoint"`
				} `json:"fsId"`
			} `json:"imageFilesystems"`
		} `json:"status"`
	}
	decode(t, k.crictl(t, "imagefsinfo"), &fsinfo)
	if fs := fsinfo.Status.ImageFilesystems; len(fs) != 2 || fs[0].FsID.Mountpoint != filepath.Join(k.env.root, "plugins", "snapshotter.native") {
		t.Errorf("crictl imagefsinfo: %+v", fsinfo.Status)
	}

	if out := k.crictl(t, "rmi", repo+":v1"); !strings.Contains(out, "Deleted: "+repo+":v1") {
		t.Errorf("crictl rmi:\n%s", out)
	}
	if out := k.crictl(t, "images", "-q"); !strings.Contains(pauseID(t, k), strings.TrimSpace(out)) || strings.Count(out, "\n") != 1 {
		t.Errorf("crictl images -q after rmi:\n%s", out)
	}
}

func decode(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
}
