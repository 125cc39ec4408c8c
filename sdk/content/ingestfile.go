package content

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// openIngestFile opens for reading and writing the ingest file a store named, refusing
// one that is not beneath root, is reached through a symbolic link or
// another file system, or is not a regular file of its own: a store's
// answer never makes its host write anywhere else.
func openIngestFile(root, path string) (*os.File, error) {
	refuse := func(why string) error {
		return fmt.Errorf("ingest file %q named by the store: %s: %w", path, why, errdefs.ErrInternal)
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || !filepath.IsAbs(path) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, refuse(fmt.Sprintf("not beneath the store's root %s", root))
	}
	dir, err := os.Open(root)
	if err != nil {
		return nil, refuse(err.Error())
	}
	defer dir.Close()
	fd, err := unix.Openat2(int(dir.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, refuse(err.Error())
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, refuse(err.Error())
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		f.Close()
		return nil, refuse("not a regular file with one link")
	}
	return f, nil
}
