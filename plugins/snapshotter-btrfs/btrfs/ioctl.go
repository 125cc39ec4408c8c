package btrfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's btrfs ioctls (include/uapi/linux/btrfs.h), called through
// x/sys. containerd/btrfs wraps the same calls, but through cgo, its delete
// walks the whole tree for nested subvolumes on every call, and it cannot
// read qgroups; the few calls needed here are stable kernel ABI.
const (
	iocSubvolCreate  = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	iocSnapDestroy   = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocTreeSearch    = 0xd0009411 // _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
	iocInoLookup     = 0xd0009412 // _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
	iocSnapCreateV2  = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocSubvolSetFlag = 0x4008941a // _IOW(0x94, 26, __u64)

	subvolReadOnly = 1 << 1 // BTRFS_SUBVOL_RDONLY

	firstFreeObjectID = 256 // BTRFS_FIRST_FREE_OBJECTID: a subvolume's root directory inode
	quotaTreeID       = 8   // BTRFS_QUOTA_TREE_OBJECTID
	qgroupStatusKey   = 240 // BTRFS_QGROUP_STATUS_KEY
	qgroupInfoKey     = 242 // BTRFS_QGROUP_INFO_KEY

	qgroupStatusOn           = 1 << 0 // BTRFS_QGROUP_STATUS_FLAG_ON
	qgroupStatusRescan       = 1 << 1 // BTRFS_QGROUP_STATUS_FLAG_RESCAN
	qgroupStatusInconsistent = 1 << 2 // BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT
)

// volArgs is struct btrfs_ioctl_vol_args.
type volArgs struct {
	fd   int64
	name [4088]byte
}

// volArgsV2 is struct btrfs_ioctl_vol_args_v2.
type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

// searchKey is struct btrfs_ioctl_search_key.
type searchKey struct {
	treeID                   uint64
	minObjectID, maxObjectID uint64
	minOffset, maxOffset     uint64
	minTransID, maxTransID   uint64
	minType, maxType         uint32
	nrItems                  uint32
	_                        uint32
	_                        [4]uint64
}

// searchArgs is struct btrfs_ioctl_search_args.
type searchArgs struct {
	key searchKey
	buf [4096 - 104]byte
}

// inoLookupArgs is struct btrfs_ioctl_ino_lookup_args.
type inoLookupArgs struct {
	treeID   uint64
	objectID uint64
	name     [4080]byte
}

// Compile-time checks of the sizes the ioctl numbers encode.
var (
	_ [4096]byte = [unsafe.Sizeof(volArgs{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(volArgsV2{})]byte{}
	_ [104]byte  = [unsafe.Sizeof(searchKey{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(searchArgs{})]byte{}
	_ [4096]byte = [unsafe.Sizeof(inoLookupArgs{})]byte{}
)

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// setName copies the last element of a path into an ioctl's name field.
func setName(dst []byte, name string) error {
	if name == "" || len(name) >= len(dst) {
		return fmt.Errorf("subvolume name %q: %w", name, unix.EINVAL)
	}
	copy(dst, name)
	return nil
}

// createSubvolume makes an empty subvolume at path.
func createSubvolume(path string) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	if err := ioctl(dir, iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return &os.PathError{Op: "create subvolume", Path: path, Err: err}
	}
	return nil
}

// snapshotSubvolume makes dst a snapshot of the subvolume src, read-only
// when readOnly. The kernel flushes src's dirty data into the snapshot and
// commits a transaction, so the snapshot is on disk when this returns.
func snapshotSubvolume(dst, src string, readOnly bool) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	dir, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer dir.Close()
	args := volArgsV2{fd: int64(s.Fd())}
	if readOnly {
		args.flags = subvolReadOnly
	}
	if err := setName(args.name[:], filepath.Base(dst)); err != nil {
		return err
	}
	if err := ioctl(dir, iocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		return &os.PathError{Op: "snapshot subvolume " + src, Path: dst, Err: err}
	}
	return nil
}

// setReadOnly makes the subvolume at path read-only.
func setReadOnly(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := uint64(subvolReadOnly)
	if err := ioctl(f, iocSubvolSetFlag, unsafe.Pointer(&flags)); err != nil {
		return &os.PathError{Op: "set subvolume read-only", Path: path, Err: err}
	}
	return nil
}

// deleteSubvolume deletes the subvolume at path, with any subvolumes a
// user made inside it. A missing path is no error.
func deleteSubvolume(path string) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer dir.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	err = ioctl(dir, iocSnapDestroy, unsafe.Pointer(&args))
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTEMPTY):
		// Subvolumes nested inside (made by whatever ran in the snapshot):
		// only here is the tree walked.
		if err := deleteNested(path); err != nil {
			return err
		}
		if err := ioctl(dir, iocSnapDestroy, unsafe.Pointer(&args)); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "delete subvolume", Path: path, Err: err}
		}
		return nil
	}
	return &os.PathError{Op: "delete subvolume", Path: path, Err: err}
}

// deleteNested deletes the subvolumes below the subvolume at path.
func deleteNested(path string) error {
	return filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if p == path || !d.IsDir() {
			return nil
		}
		if ok, err := isSubvolume(p); err != nil || !ok {
			return err
		}
		if err := deleteSubvolume(p); err != nil {
			return err
		}
		return filepath.SkipDir
	})
}

// isSubvolume reports whether the directory at path is a subvolume's root.
func isSubvolume(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	return st.Ino == firstFreeObjectID && st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// subvolumeID is the id (tree id) of the subvolume holding path.
func subvolumeID(f *os.File) (uint64, error) {
	args := inoLookupArgs{objectID: firstFreeObjectID}
	if err := ioctl(f, iocInoLookup, unsafe.Pointer(&args)); err != nil {
		return 0, &os.PathError{Op: "subvolume id", Path: f.Name(), Err: err}
	}
	return args.treeID, nil
}

// errNoQuota: the filesystem keeps no usable qgroup numbers (quotas off,
// a rescan running, or marked inconsistent).
var errNoQuota = errors.New("no consistent btrfs qgroup accounting")

// exclusiveBytes is the qgroup "exclusive" figure of the subvolume at path:
// the bytes only it references, so a snapshot's own data and not what it
// shares with its parent. It is errNoQuota when quotas give no answer.
func exclusiveBytes(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	status, err := quotaItem(f, qgroupStatusKey, 0)
	if err != nil {
		return 0, err
	}
	// struct btrfs_qgroup_status_item: version, generation, flags, rescan.
	if len(status) < 24 {
		return 0, errNoQuota
	}
	flags := binary.LittleEndian.Uint64(status[16:])
	if flags&qgroupStatusOn == 0 || flags&(qgroupStatusRescan|qgroupStatusInconsistent) != 0 {
		return 0, errNoQuota
	}
	id, err := subvolumeID(f)
	if err != nil {
		return 0, err
	}
	info, err := quotaItem(f, qgroupInfoKey, id) // level-0 qgroup id = subvolume id
	if err != nil {
		return 0, err
	}
	// struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr.
	if len(info) < 32 {
		return 0, errNoQuota
	}
	return int64(binary.LittleEndian.Uint64(info[24:])), nil
}

// quotaItem reads the item (0, typ, offset) of the quota tree: errNoQuota
// when there is no quota tree or no such item.
func quotaItem(f *os.File, typ uint32, offset uint64) ([]byte, error) {
	args := searchArgs{key: searchKey{
		treeID:     quotaTreeID,
		minOffset:  offset,
		maxOffset:  offset,
		maxTransID: ^uint64(0),
		minType:    typ,
		maxType:    typ,
		nrItems:    1,
	}}
	if err := ioctl(f, iocTreeSearch, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, errNoQuota
		}
		return nil, &os.PathError{Op: "search quota tree", Path: f.Name(), Err: err}
	}
	if args.key.nrItems == 0 {
		return nil, errNoQuota
	}
	// struct btrfs_ioctl_search_header: transid, objectid, offset, type, len.
	hdr := args.buf[:32]
	itemType := binary.NativeEndian.Uint32(hdr[24:])
	itemOffset := binary.NativeEndian.Uint64(hdr[16:])
	n := binary.NativeEndian.Uint32(hdr[28:])
	if itemType != typ || itemOffset != offset || int(n) > len(args.buf)-32 {
		return nil, errNoQuota
	}
	return args.buf[32 : 32+n], nil
}
