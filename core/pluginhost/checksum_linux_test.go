package pluginhost_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/core/pluginhost"
	"github.com/keel-runtime/keel/sdk/testkit"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// The checksum is taken of the very file that runs: the path is replaced by
// another plugin while the host reads the file to check it, and the checked
// plugin still is the one that starts. The moment is caught with a fanotify
// permission event, which holds the host's first read of the file until the
// test has swapped the path.
func TestChecksumIsOfTheExecutedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keel-snapshotter-mem")
	copyFile(t, filepath.Join(bin, "memsnap"), path)
	impostor := filepath.Join(dir, "impostor")
	copyFile(t, filepath.Join(bin, "wrongkind"), impostor) // a content plugin: would fail the kind check
	digest := fileDigest(t, path)

	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		testkit.SkipOrFail(t, "fanotify permission events unavailable: %v", err)
	}
	fan := os.NewFile(uintptr(fd), "fanotify") // non-blocking: Close ends a pending Read
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_ACCESS_PERM, unix.AT_FDCWD, path); err != nil {
		fan.Close()
		testkit.SkipOrFail(t, "fanotify mark: %v", err)
	}
	swapped := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		first := true
		for {
			n, err := fan.Read(buf)
			if err != nil {
				return
			}
			// struct fanotify_event_metadata: event_len u32, vers u8,
			// reserved u8, metadata_len u16, mask u64, fd s32, pid s32.
			for off := 0; off+24 <= n; {
				ev := buf[off:]
				evLen := binary.NativeEndian.Uint32(ev[0:])
				mask := binary.NativeEndian.Uint64(ev[8:])
				evFd := int32(binary.NativeEndian.Uint32(ev[16:]))
				pid := int32(binary.NativeEndian.Uint32(ev[20:]))
				if first && mask&unix.FAN_ACCESS_PERM != 0 && int(pid) == os.Getpid() {
					first = false
					// The host holds the file open and reads it for the
					// checksum: now make the path name another program.
					swapped <- os.Rename(impostor, path)
				}
				if evFd >= 0 {
					resp := binary.NativeEndian.AppendUint32(nil, uint32(evFd))
					resp = binary.NativeEndian.AppendUint32(resp, unix.FAN_ALLOW)
					_, _ = fan.Write(resp)
					unix.Close(int(evFd))
				}
				if evLen == 0 {
					break
				}
				off += int(evLen)
			}
		}
	}()
	t.Cleanup(func() {
		fan.Close() // lets every pending access go on
		wg.Wait()
	})

	s := spec(t, "mem", path)
	s.SHA256 = digest
	h := startHost(t, []pluginhost.Spec{s})

	select {
	case err := <-swapped:
		if err != nil {
			t.Fatalf("swapping the file: %v", err)
		}
	default:
		t.Fatal("the host never read the file: the swap did not happen")
	}
	if fileDigest(t, path) == digest {
		t.Fatal("the path still holds the checked file")
	}
	st := onlyStatus(t, h)
	if st.State != pluginhost.StateRunning || st.Version != "0.1.0" {
		t.Fatalf("status = %+v, want the checked memsnap plugin running", st)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(exe, "(deleted)") {
		t.Errorf("plugin runs %q, want the replaced (deleted) file", exe)
	}
}
