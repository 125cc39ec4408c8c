package cri

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/keel-runtime/keel/client/oci"
)

// TestSupplementalGroupsPolicy: run as uid 1000, a member of group 50000
// in the image's /etc/group, with supplemental group 1234: Merge (the
// default) gives the primary group, the image's and the config's; Strict
// leaves the image's out.
func TestSupplementalGroupsPolicy(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home:/bin/sh\n",
		"group":  "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
	} {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		policy runtimeapi.SupplementalGroupsPolicy
		want   []uint32
	}{
		{runtimeapi.SupplementalGroupsPolicy_Merge, []uint32{1000, 1234, 50000}},
		{runtimeapi.SupplementalGroupsPolicy_Strict, []uint32{1000, 1234}},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			opts, err := securityOpts(&runtimeapi.LinuxContainerSecurityContext{
				RunAsUser: &runtimeapi.Int64Value{Value: 1000}, SupplementalGroups: []int64{1234}, SupplementalGroupsPolicy: tc.policy,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx := oci.WithRootFS(context.Background(), oci.RootFSPath(root))
			s, err := oci.GenerateSpec(ctx, opts...)
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if got := slices.Sorted(slices.Values(u.AdditionalGids)); u.UID != 1000 || u.GID != 1000 || !slices.Equal(got, tc.want) {
				t.Errorf("user %d:%d, groups %v; want 1000:1000, %v", u.UID, u.GID, got, tc.want)
			}
		})
	}
}
