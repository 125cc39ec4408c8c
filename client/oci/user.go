package oci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/user"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// RootFS runs fn on the container's root filesystem, opened as an os.Root:
// no path, symlink or ".." read through it leads out of the rootfs. Spec
// options that read the image's files (user and group names) find it on
// their context (WithRootFS); client.WithNewSpec puts the container's
// snapshot there, mounted read-only while the spec is made.
type RootFS func(ctx context.Context, fn func(root *os.Root) error) error

type rootFSKey struct{}

// WithRootFS returns ctx carrying rootfs for the spec options run with it.
func WithRootFS(ctx context.Context, rootfs RootFS) context.Context {
	return context.WithValue(ctx, rootFSKey{}, rootfs)
}

// RootFSPath is the RootFS of the directory dir.
func RootFSPath(dir string) RootFS {
	return func(_ context.Context, fn func(*os.Root) error) error {
		root, err := os.OpenRoot(dir)
		if err != nil {
			return err
		}
		defer root.Close()
		return fn(root)
	}
}

// withRootFS runs fn on the rootfs ctx carries, else on s.Root.Path when
// absolute; errNoRootFS when neither.
func withRootFS(ctx context.Context, s *Spec, fn func(*os.Root) error) error {
	if rootfs, ok := ctx.Value(rootFSKey{}).(RootFS); ok && rootfs != nil {
		return rootfs(ctx, fn)
	}
	if s.Root != nil && filepath.IsAbs(s.Root.Path) {
		return RootFSPath(s.Root.Path)(ctx, fn)
	}
	return errNoRootFS
}

var errNoRootFS = errors.New("the container's root filesystem is not known here (make the spec with client.WithNewSpec after the snapshot, or oci.WithRootFS)")

// errNoUser is what a filter that matched nothing gives.
var errNoUser = errors.New("no such entry")

// lookupUser is the first /etc/passwd entry of the rootfs that match takes.
func lookupUser(root *os.Root, match func(user.User) bool) (user.User, error) {
	f, err := root.Open("etc/passwd")
	if err != nil {
		return user.User{}, err
	}
	defer f.Close()
	users, err := user.ParsePasswdFilter(f, match)
	if err != nil {
		return user.User{}, err
	}
	if len(users) == 0 {
		return user.User{}, errNoUser
	}
	return users[0], nil
}

// lookupGroups is the /etc/group entries of the rootfs that match takes.
func lookupGroups(root *os.Root, match func(user.Group) bool) ([]user.Group, error) {
	f, err := root.Open("etc/group")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return user.ParseGroupFilter(f, match)
}

// parseID reads a uid or gid; ok is false for a name. runc takes ids up
// to MaxInt32, as containerd does.
func parseID(user, v string) (id uint32, ok bool, err error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, false, fmt.Errorf("user %q: %s is out of range: %w", user, v, errdefs.ErrInvalidArgument)
		}
		return 0, false, nil
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, false, fmt.Errorf("user %q: %s is out of range: %w", user, v, errdefs.ErrInvalidArgument)
	}
	return uint32(n), true, nil
}

// ensurePrimaryGID lists the primary gid among the additional ones, as
// containerd does.
func ensurePrimaryGID(s *Spec) {
	u := &s.Process.User
	if !slices.Contains(u.AdditionalGids, u.GID) {
		u.AdditionalGids = append([]uint32{u.GID}, u.AdditionalGids...)
	}
}

// WithUser runs the process as user, in the OCI image config's forms:
// uid, name, uid:gid, name:group, uid:group or name:gid, as containerd's
// WithUser does. Names are looked up in the rootfs's /etc/passwd and
// /etc/group (see RootFS); a name not found there is an error naming it.
// A lone uid takes the primary group of its passwd entry, or 0 when it
// has none (or there is no /etc/passwd); uid:gid reads no file.
// Additional groups are reset to the primary one (WithAdditionalGIDs adds
// the user's supplementary groups).
func WithUser(userstr string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		defer ensurePrimaryGID(s)
		s.Process.User.AdditionalGids = nil
		name, group, hasGroup := strings.Cut(userstr, ":")
		if name == "" || (hasGroup && (group == "" || strings.Contains(group, ":"))) {
			return fmt.Errorf("user %q: want uid, name, uid:gid or name:group: %w", userstr, errdefs.ErrInvalidArgument)
		}
		uid, uidNumeric, err := parseID(userstr, name)
		if err != nil {
			return err
		}
		var gid uint32
		gidNumeric := false
		if hasGroup {
			if gid, gidNumeric, err = parseID(userstr, group); err != nil {
				return err
			}
		}
		switch {
		case uidNumeric && hasGroup && gidNumeric:
			s.Process.User.UID, s.Process.User.GID = uid, gid
			return nil
		case uidNumeric && !hasGroup:
			// The passwd entry's group, if any.
			err := withRootFS(ctx, s, func(root *os.Root) error {
				u, err := lookupUser(root, func(u user.User) bool { return u.Uid == int(uid) })
				if err == nil {
					gid = uint32(u.Gid)
					return nil
				}
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoUser) {
					return nil
				}
				return err
			})
			if err != nil && !errors.Is(err, errNoRootFS) {
				return fmt.Errorf("user %q: %w", userstr, err)
			}
			s.Process.User.UID, s.Process.User.GID = uid, gid
			return nil
		}
		err = withRootFS(ctx, s, func(root *os.Root) error {
			if !uidNumeric {
				u, err := lookupUser(root, func(u user.User) bool { return u.Name == name })
				if err != nil && name == "root" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoUser)) {
					// root is 0:0 in an image without a passwd entry for it.
					u, err = user.User{Name: "root"}, nil
				}
				if err != nil {
					return fmt.Errorf("no user %q in the image's /etc/passwd: %w", name, notFound(err))
				}
				uid = uint32(u.Uid)
				if !hasGroup {
					gid = uint32(u.Gid)
				}
			}
			if hasGroup && !gidNumeric {
				gs, err := lookupGroups(root, func(g user.Group) bool { return g.Name == group })
				if err == nil && len(gs) == 0 {
					err = errNoUser
				}
				if err != nil {
					return fmt.Errorf("no group %q in the image's /etc/group: %w", group, notFound(err))
				}
				gid = uint32(gs[0].Gid)
			}
			return nil
		})
		if errors.Is(err, errNoRootFS) && userstr == "root" {
			s.Process.User.UID, s.Process.User.GID = 0, 0
			return nil
		}
		if errors.Is(err, errNoRootFS) {
			return fmt.Errorf("user %q: names are looked up in the image, but %w: %w", userstr, err, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("user %q: %w", userstr, err)
		}
		s.Process.User.UID, s.Process.User.GID = uid, gid
		return nil
	}
}

// notFound classes a lookup's failure: a missing file or entry is
// NotFound (keeping the cause), anything else stays as it is.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoUser) {
		return fmt.Errorf("%v: %w", err, errdefs.ErrNotFound)
	}
	return err
}

// WithAdditionalGIDs sets the process's additional groups to those the
// rootfs's /etc/group lists userstr (a name, or a uid found by its passwd
// entry) as a member of, except a group of the user's own name, plus the
// primary group, as containerd's WithAdditionalGIDs does. Without an
// /etc/group, a passwd entry, or a known rootfs, only the primary group.
func WithAdditionalGIDs(userstr string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		defer ensurePrimaryGID(s)
		s.Process.User.AdditionalGids = nil
		err := withRootFS(ctx, s, func(root *os.Root) error {
			name := userstr
			if uid, numeric, err := parseID(userstr, userstr); err != nil {
				return err
			} else if numeric {
				u, err := lookupUser(root, func(u user.User) bool { return u.Uid == int(uid) })
				if err != nil {
					if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoUser) {
						return nil
					}
					return err
				}
				name = u.Name
			}
			gs, err := lookupGroups(root, func(g user.Group) bool {
				return g.Name != name && slices.Contains(g.List, name)
			})
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, g := range gs {
				s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, uint32(g.Gid))
			}
			return nil
		})
		if err != nil && !errors.Is(err, errNoRootFS) {
			return fmt.Errorf("additional groups of %q: %w", userstr, err)
		}
		return nil
	}
}

// WithUserGroups is WithUser(userstr) then WithAdditionalGIDs of the uid
// it resolved to: what an image's config User and `keel run --user` mean.
func WithUserGroups(userstr string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		if err := WithUser(userstr)(ctx, s); err != nil {
			return err
		}
		return WithAdditionalGIDs(strconv.FormatUint(uint64(s.Process.User.UID), 10))(ctx, s)
	}
}
