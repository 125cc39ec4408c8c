// Package realimage builds, for the tests, a Debian image the way real
// images are built, and caches it outside the repository between runs.
//
// Layer 1 is `debootstrap --variant=minbase bookworm` (its /dev emptied, as
// image builders do). Layer 2 is what a Dockerfile's
//
//	RUN apt-get update && apt-get install -y gawk mawk- && apt-get clean && rm -rf …
//
// leaves: the command runs in a chroot on an overlay mount over layer 1, and
// the overlay's upper dir becomes the layer (whiteout devices turned into
// .wh. files, opaque dirs into .wh..wh..opq). The install replaces the awk
// alternative and removes mawk; the cleanup deletes whole directories below
// non-root parents (usr/share/.wh.info) and re-creates one
// (usr/share/man, opaque). Next to the layers the cache keeps a listing of
// the merged tree (ReadManifest): what any correct unpacking of the two
// layers must produce.
//
// The cache lives in $KEEL_TEST_CACHE, else /var/cache/keel-test, under a
// key that changes with the recipe. A build runs in a scratch directory
// renamed into place when complete, under a file lock, so a killed build
// leaves no half cache and test binaries building at once do not collide.
package realimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/fixture/registry"
	"github.com/keel-runtime/keel/sdk/testkit"
	"github.com/keel-runtime/keel/test/fstree"
)

// The recipe. Changing any of it changes the cache key.
const (
	Suite  = "bookworm"
	Mirror = "http://deb.debian.org/debian"
	// Installed is the package layer 2 installs; Removed the one it
	// removes (mawk, whose awk alternative Installed takes over).
	Installed = "gawk"
	Removed   = "mawk"
)

// installScript runs, as root in a new mount namespace, the layer-2 step:
// $1 is layer 1's tree, $2 the upper dir, $3 overlay's work dir, $4 where
// to mount the merged tree. Every mount dies with the namespace.
const installScript = `set -eu
rootfs=$1 upper=$2 work=$3 merged=$4
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$upper,workdir=$work,redirect_dir=off,metacopy=off" "$merged"
mount -t proc proc "$merged/proc"
mount --bind /dev "$merged/dev"
chroot "$merged" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive /bin/sh -euxc '
apt-get update -q
apt-get install -y -q --no-install-recommends ` + Installed + ` ` + Removed + `-
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/info /usr/share/man /var/log/apt /var/cache/debconf/*-old
mkdir -p /usr/share/man/man1
'
umount "$merged/dev" "$merged/proc" "$merged"
`

// formatVersion counts changes to what the build writes (layout, tar
// conversion, manifest) that the recipe text does not show.
const formatVersion = "1"

// Key names the cache entry of the current recipe.
func Key() string {
	h := sha256.Sum256([]byte(strings.Join([]string{formatVersion, Suite, Mirror, installScript}, "\x00")))
	return Suite + "-" + hex.EncodeToString(h[:])[:12]
}

// CacheDir is where built images are kept.
func CacheDir() string {
	if d := os.Getenv("KEEL_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/keel-test"
}

// Image is a built image in the cache.
type Image struct {
	// Dir is the cache entry.
	Dir string `json:"-"`
	// Layers, bottom first.
	Layers []Layer `json:"layers"`
	// Config is the image's runtime config.
	Config ocispec.ImageConfig `json:"config"`
	// Manifest is the file listing the merged tree (ReadManifest).
	Manifest string `json:"manifest"`
	// Timings of the build steps, for the log.
	Timings map[string]string `json:"timings"`
}

const imageFile = "image.json"

// Reference reads the listing of the merged tree.
func (i *Image) Reference() ([]fstree.Entry, error) { return ReadManifest(i.Manifest) }

// writeManifest stores a tree listing as JSON at path.
func writeManifest(path string, entries []fstree.Entry) error {
	b, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadManifest reads a tree listing written by the build.
func ReadManifest(path string) ([]fstree.Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []fstree.Entry
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// RegistryImage reads the layers into an image for the registry fixture,
// with platform linux/arch.
func (i *Image) RegistryImage(arch string) (*registry.Image, error) {
	var layers []registry.Layer
	for _, l := range i.Layers {
		data, err := os.ReadFile(l.Path)
		if err != nil {
			return nil, err
		}
		b := registry.NewBlob(MediaType, data)
		if b.Desc.Digest != l.Digest {
			return nil, fmt.Errorf("%s: digest %s, want %s (cache corrupt: remove %s)", l.Path, b.Desc.Digest, l.Digest, i.Dir)
		}
		layers = append(layers, registry.Layer{Blob: b, DiffID: l.DiffID})
	}
	return registry.BuildImageFrom(layers, i.Config, registry.ImageOptions{Arch: arch})
}

// TB is what Get needs of a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Logf(format string, args ...any)
}

var getMu sync.Mutex

// Get returns the cached image, building it first if need be (about a
// minute and a half, with network access to Mirror). Without root or
// debootstrap it skips the test, or fails it under KEEL_TEST_STRICT=1.
func Get(t TB) *Image {
	t.Helper()
	testkit.RequireRoot(t, "build a Debian image (debootstrap, chroot, overlay mounts)")
	for _, bin := range []string{"debootstrap", "chroot"} {
		if _, err := exec.LookPath(bin); err != nil {
			testkit.SkipOrFail(t, "building a Debian image needs %s (apt-get install debootstrap): %v", bin, err)
		}
	}
	getMu.Lock()
	defer getMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	img, built, err := Ensure(ctx, filepath.Join(CacheDir(), "realimage"))
	if err != nil {
		t.Fatalf("real image: %v", err)
	}
	if built {
		t.Logf("built the real image in %s: %v", img.Dir, img.Timings)
	}
	return img
}

// Ensure returns the image cached under dir, building it if absent; built
// tells whether it did.
func Ensure(ctx context.Context, dir string) (img *Image, built bool, err error) {
	return ensure(dir, Key(), func(scratch string) error { return build(ctx, scratch) })
}

// ensure loads the entry key under dir, or makes it with build into a
// scratch dir (cleared of a killed build's leftovers first) renamed into
// place, all under the entry's lock.
func ensure(dir, key string, build func(scratch string) error) (img *Image, built bool, err error) {
	final := filepath.Join(dir, key)
	if img, err := load(final); err == nil {
		return img, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, err
	}
	lock, err := os.OpenFile(final+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	// Another process may have built it while we waited.
	if img, err := load(final); err == nil {
		return img, false, nil
	}
	scratch := final + ".build"
	if err := clearStale(scratch); err != nil {
		return nil, false, err
	}
	if err := build(scratch); err != nil {
		// The error carries the log's tail; the rest is ~300 MB of trees.
		return nil, false, errors.Join(err, clearStale(scratch))
	}
	if err := os.RemoveAll(final); err != nil { // a corrupt entry load refused
		return nil, false, err
	}
	if err := os.Rename(scratch, final); err != nil {
		return nil, false, err
	}
	if err := syncDir(dir); err != nil {
		return nil, false, err
	}
	img, err = load(final)
	return img, true, err
}

func load(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, imageFile))
	if err != nil {
		return nil, err
	}
	img := &Image{Dir: dir}
	if err := json.Unmarshal(b, img); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	// Stored relative, so a cache may move.
	for i := range img.Layers {
		img.Layers[i].Path = filepath.Join(dir, img.Layers[i].Path)
		if _, err := os.Stat(img.Layers[i].Path); err != nil {
			return nil, err
		}
	}
	img.Manifest = filepath.Join(dir, img.Manifest)
	return img, nil
}

// build makes the image in scratch.
func build(ctx context.Context, scratch string) (err error) {
	dirs := map[string]string{}
	for _, name := range []string{"rootfs", "upper", "work", "merged"} {
		dirs[name] = filepath.Join(scratch, name)
		if err := os.MkdirAll(dirs[name], 0o755); err != nil {
			return err
		}
	}
	logFile, err := os.Create(filepath.Join(scratch, "build.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nlast lines of %s:\n%s", err, logFile.Name(), tail(logFile.Name(), 20))
		}
	}()
	timings := map[string]string{}
	step := func(name string, f func() error) error {
		start := time.Now()
		fmt.Fprintf(logFile, "== %s\n", name)
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		timings[name] = time.Since(start).Round(100 * time.Millisecond).String()
		return nil
	}
	if err := step("debootstrap", func() error {
		return runIsolated(ctx, logFile, "debootstrap", "--variant=minbase", Suite, dirs["rootfs"], Mirror)
	}); err != nil {
		return err
	}
	// Image builders ship an empty /dev: the runtime makes its own.
	if err := emptyDir(filepath.Join(dirs["rootfs"], "dev")); err != nil {
		return err
	}
	if err := step("apt-get install", func() error {
		return runIsolated(ctx, logFile, "/bin/sh", "-c", installScript, "install", dirs["rootfs"], dirs["upper"], dirs["work"], dirs["merged"])
	}); err != nil {
		return err
	}
	img := Image{Config: ocispec.ImageConfig{
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd: []string{"bash"},
	}, Manifest: "reference.json", Timings: timings}
	if err := step("pack layers", func() error {
		for i, src := range []string{dirs["rootfs"], dirs["upper"]} {
			name := fmt.Sprintf("layer-%d.tar.gz", i+1)
			l, err := writeLayer(src, filepath.Join(scratch, name), i > 0)
			if err != nil {
				return err
			}
			l.Path = name
			img.Layers = append(img.Layers, l)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := step("list merged tree", func() error {
		entries, err := mergedTree(dirs)
		if err != nil {
			return err
		}
		return writeManifest(filepath.Join(scratch, img.Manifest), entries)
	}); err != nil {
		return err
	}
	for _, d := range []string{"rootfs", "upper", "work", "merged"} {
		if err := os.RemoveAll(dirs[d]); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(scratch, imageFile), b, 0o644); err != nil {
		return err
	}
	return syncDir(scratch)
}

// mergedTree lists the tree the two layers make, from a read-only overlay
// of the upper dir over layer 1: the chroot the install ran in.
func mergedTree(dirs map[string]string) ([]fstree.Entry, error) {
	opts := "lowerdir=" + dirs["upper"] + ":" + dirs["rootfs"]
	if err := unix.Mount("overlay", dirs["merged"], "overlay", unix.MS_RDONLY, opts); err != nil {
		return nil, fmt.Errorf("mount overlay %s: %w", opts, err)
	}
	entries, err := fstree.Scan(dirs["merged"])
	if uerr := unix.Unmount(dirs["merged"], 0); uerr != nil {
		return nil, errors.Join(err, fmt.Errorf("unmount %s: %w", dirs["merged"], uerr))
	}
	return entries, err
}

// runIsolated runs a command in its own mount namespace (so every mount it
// makes dies with it) and process group (killed whole when ctx ends),
// output to log.
func runIsolated(ctx context.Context, log io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd.Run()
}

// clearStale unmounts whatever is mounted below dir (deepest first) and
// removes it.
func clearStale(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount stale %s: %w", p, err)
		}
	}
	return os.RemoveAll(dir)
}

func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
