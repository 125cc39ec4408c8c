package outfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// TestCreate writes "new" to each kind of path, then checks what the path
// is and holds; committed or aborted, nothing but the named target changes.
func TestCreate(t *testing.T) {
	type check func(t *testing.T, dir string, stdout *bytes.Buffer, committed bool)
	isFile := func(name, want string) check {
		return func(t *testing.T, dir string, _ *bytes.Buffer, _ bool) {
			t.Helper()
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Fatalf("%s holds %q, want %q", name, got, want)
			}
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to write
		refused func(error) bool                      // Create fails with this class
		check   check                                 // after Commit (committed) or Abort
	}{
		{
			name:  "Stdout",
			setup: func(*testing.T, string) string { return "-" },
			check: func(t *testing.T, _ string, stdout *bytes.Buffer, _ bool) {
				if stdout.String() != "new" {
					t.Fatalf("stdout got %q", stdout)
				}
			},
		},
		{
			name:  "NewFile",
			setup: func(_ *testing.T, dir string) string { return filepath.Join(dir, "out") },
			check: func(t *testing.T, dir string, b *bytes.Buffer, committed bool) {
				if !committed {
					if _, err := os.Lstat(filepath.Join(dir, "out")); !errors.Is(err, fs.ErrNotExist) {
						t.Fatalf("aborted output left a file: %v", err)
					}
					return
				}
				isFile("out", "new")(t, dir, b, committed)
			},
		},
		{
			name: "RegularFile",
			setup: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "out"), "old")
				return filepath.Join(dir, "out")
			},
			check: func(t *testing.T, dir string, b *bytes.Buffer, committed bool) {
				isFile("out", map[bool]string{true: "new", false: "old"}[committed])(t, dir, b, committed)
			},
		},
		{
			name: "SymlinkToFile",
			setup: func(t *testing.T, dir string) string {
				writeFile(t, filepath.Join(dir, "target"), "old")
				symlink(t, "target", filepath.Join(dir, "link"))
				return filepath.Join(dir, "link")
			},
			check: func(t *testing.T, dir string, b *bytes.Buffer, committed bool) {
				isLink(t, filepath.Join(dir, "link"), "target")
				isFile("target", map[bool]string{true: "new", false: "old"}[committed])(t, dir, b, committed)
			},
		},
		{
			name: "DanglingSymlink",
			setup: func(t *testing.T, dir string) string {
				if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
					t.Fatal(err)
				}
				symlink(t, "sub/target", filepath.Join(dir, "link"))
				return filepath.Join(dir, "link")
			},
			check: func(t *testing.T, dir string, b *bytes.Buffer, committed bool) {
				isLink(t, filepath.Join(dir, "link"), "sub/target")
				if committed {
					isFile("sub/target", "new")(t, dir, b, committed)
				}
			},
		},
		{
			name: "SymlinkToDir",
			setup: func(t *testing.T, dir string) string {
				if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
					t.Fatal(err)
				}
				symlink(t, "d", filepath.Join(dir, "link"))
				return filepath.Join(dir, "link")
			},
			refused: errdefs.IsInvalidArgument,
			check: func(t *testing.T, dir string, _ *bytes.Buffer, _ bool) {
				isLink(t, filepath.Join(dir, "link"), "d")
			},
		},
		{
			name:    "Dir",
			setup:   func(_ *testing.T, dir string) string { return dir },
			refused: errdefs.IsInvalidArgument,
		},
		{
			name: "SymlinkLoop",
			setup: func(t *testing.T, dir string) string {
				symlink(t, "b", filepath.Join(dir, "a"))
				symlink(t, "a", filepath.Join(dir, "b"))
				return filepath.Join(dir, "a")
			},
			refused: errdefs.IsInvalidArgument,
		},
		{
			name: "CharDevice",
			setup: func(t *testing.T, dir string) string {
				// A /dev/null of our own: writes vanish, and it must stay
				// a character device.
				p := filepath.Join(dir, "null")
				if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
					t.Skipf("mknod needs CAP_MKNOD: %v", err)
				}
				return p
			},
			check: func(t *testing.T, dir string, _ *bytes.Buffer, _ bool) {
				fi, err := os.Lstat(filepath.Join(dir, "null"))
				if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
					t.Fatalf("the device is now %v (%v)", fi.Mode(), err)
				}
			},
		},
		{
			name: "FIFO",
			setup: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "fifo")
				if err := unix.Mkfifo(p, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			},
			check: func(t *testing.T, dir string, _ *bytes.Buffer, _ bool) {
				fi, err := os.Lstat(filepath.Join(dir, "fifo"))
				if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
					t.Fatalf("the FIFO is now %v (%v)", fi.Mode(), err)
				}
			},
		},
	}
	for _, tt := range tests {
		for _, commit := range []bool{true, false} {
			name := tt.name + map[bool]string{true: "/Commit", false: "/Abort"}[commit]
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				path := tt.setup(t, dir)
				// A FIFO needs its reader before the writer's open returns.
				read := make(chan string, 1)
				if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeNamedPipe != 0 {
					go func() {
						f, err := os.Open(path)
						if err != nil {
							read <- err.Error()
							return
						}
						defer f.Close()
						b, _ := io.ReadAll(f)
						read <- string(b)
					}()
				} else {
					close(read)
				}
				var stdout bytes.Buffer
				out, err := Create(path, &stdout)
				if tt.refused != nil {
					if err == nil || !tt.refused(err) {
						t.Fatalf("Create(%s): %v, want it refused", path, err)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					if _, err := out.Write([]byte("new")); err != nil {
						t.Fatal(err)
					}
					if commit {
						if err := out.Commit(); err != nil {
							t.Fatal(err)
						}
					} else {
						out.Abort()
					}
					if got, ok := <-read; ok && got != "new" {
						t.Fatalf("the FIFO's reader got %q", got)
					}
				}
				if tt.check != nil {
					tt.check(t, dir, &stdout, commit)
				}
				// No temporary file is left behind.
				matches, _ := filepath.Glob(filepath.Join(dir, "*", ".*.tmp-*"))
				more, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
				if left := append(matches, more...); len(left) > 0 {
					t.Fatalf("temporary files left: %v", left)
				}
			})
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func isLink(t *testing.T, link, want string) {
	t.Helper()
	got, err := os.Readlink(link)
	if err != nil || got != want {
		t.Fatalf("%s is no longer a link to %s: %q, %v", link, want, got, err)
	}
}

func TestCommitKeepsModeAndOwner(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	writeFile(t, p, "old")
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	out, err := Create(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	out.Write([]byte("new"))
	if err := out.Commit(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode after commit: %v, %v", fi.Mode(), err)
	}
	if os.Geteuid() != 0 {
		return
	}
	// Root replacing another user's file leaves it theirs.
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	out, err = Create(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Commit(); err != nil {
		t.Fatal(err)
	}
	if st, ok := statOf(mustStat(t, p)); !ok || st.Uid != 65534 || st.Gid != 65534 {
		t.Fatalf("owner after commit: %+v", st)
	}
}

func mustStat(t *testing.T, p string) fs.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
