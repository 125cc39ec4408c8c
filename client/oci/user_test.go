package oci

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
app:x:1000:1000::/home/app:/bin/sh
svc:x:1001:1002::/:/bin/false
`
	testGroup = `root:x:0:
app:x:1000:app
staff:x:50:app,svc
svcgrp:x:1002:
audio:x:29:app
`
)

func writeRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUser: the image config's user forms resolve against the rootfs's
// passwd and group files as containerd resolves them.
func TestUser(t *testing.T) {
	rootfs := writeRootfs(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup})
	empty := t.TempDir()
	tests := []struct {
		user     string
		root     string
		uid, gid uint32
		gids     []uint32
		err      string // in the error; "" for none
	}{
		{user: "app", root: rootfs, uid: 1000, gid: 1000, gids: []uint32{1000, 50, 29}},
		{user: "app:staff", root: rootfs, uid: 1000, gid: 50, gids: []uint32{50, 29}},
		{user: "app:7", root: rootfs, uid: 1000, gid: 7, gids: []uint32{7, 50, 29}},
		{user: "1000", root: rootfs, uid: 1000, gid: 1000, gids: []uint32{1000, 50, 29}},
		{user: "1001:svcgrp", root: rootfs, uid: 1001, gid: 1002, gids: []uint32{1002, 50}},
		{user: "4242", root: rootfs, uid: 4242, gid: 0, gids: []uint32{0}},
		{user: "4242:4243", root: rootfs, uid: 4242, gid: 4243, gids: []uint32{4243}},
		{user: "root", root: rootfs, uid: 0, gid: 0, gids: []uint32{0}},
		{user: "root", root: empty, uid: 0, gid: 0, gids: []uint32{0}},
		{user: "1000", root: empty, uid: 1000, gid: 0, gids: []uint32{0}},
		{user: "nobody", root: rootfs, err: `no user "nobody"`},
		{user: "app:nogroup", root: rootfs, err: `no group "nogroup"`},
		{user: "app", root: empty, err: `no user "app"`},
		{user: "a:b:c", root: rootfs, err: "want uid, name"},
		{user: "99999999999", root: rootfs, err: "out of range"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.user, ":", "_"), func(t *testing.T) {
			ctx := WithRootFS(context.Background(), RootFSPath(tt.root))
			s, err := GenerateSpec(ctx, WithUserGroups(tt.user))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tt.uid || u.GID != tt.gid || !slices.Equal(u.AdditionalGids, tt.gids) {
				t.Fatalf("got %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, tt.uid, tt.gid, tt.gids)
			}
		})
	}
	t.Run("NotFoundClass", func(t *testing.T) {
		ctx := WithRootFS(context.Background(), RootFSPath(rootfs))
		if _, err := GenerateSpec(ctx, WithUser("nobody")); !errdefs.IsNotFound(err) {
			t.Fatalf("unknown name: %v, want NotFound", err)
		}
	})
	t.Run("NoRootFS", func(t *testing.T) {
		// Names need the rootfs; numbers and root do not.
		if _, err := GenerateSpec(context.Background(), WithUser("app")); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("name without a rootfs: %v, want InvalidArgument", err)
		}
		s, err := GenerateSpec(context.Background(), WithUserGroups("1000:1000"))
		if err != nil || s.Process.User.UID != 1000 || s.Process.User.GID != 1000 {
			t.Fatalf("uid:gid without a rootfs: %+v %v", s.Process.User, err)
		}
	})
}

// TestUserStaysInRootfs: passwd and group files reached through symlinks
// that leave the rootfs are not read.
func TestUserStaysInRootfs(t *testing.T) {
	outside := writeRootfs(t, map[string]string{"etc/passwd": "evil:x:0:0::/:/bin/sh\n", "etc/group": "evil:x:0:evil\n"})
	for name, link := range map[string]func(root string) error{
		"AbsoluteEtc": func(root string) error { return os.Symlink(filepath.Join(outside, "etc"), filepath.Join(root, "etc")) },
		"RelativeEtc": func(root string) error {
			rel, err := filepath.Rel(root, filepath.Join(outside, "etc"))
			if err != nil {
				return err
			}
			return os.Symlink(rel, filepath.Join(root, "etc"))
		},
		"AbsolutePasswd": func(root string) error {
			if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(outside, "etc/passwd"), filepath.Join(root, "etc/passwd"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if err := link(root); err != nil {
				t.Fatal(err)
			}
			ctx := WithRootFS(context.Background(), RootFSPath(root))
			s, err := GenerateSpec(ctx, WithUser("evil"))
			if err == nil {
				t.Fatalf("resolved %+v through a link out of the rootfs", s.Process.User)
			}
		})
	}
	// A link that stays inside is followed.
	root := writeRootfs(t, map[string]string{"usr/lib/passwd": testPasswd})
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	if err := os.Symlink("../usr/lib/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	s, err := GenerateSpec(WithRootFS(context.Background(), RootFSPath(root)), WithUser("app"))
	if err != nil || s.Process.User.UID != 1000 {
		t.Fatalf("link inside the rootfs: %+v %v", s.Process.User, err)
	}
}
