package namespaces

import (
	"context"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/core/scope"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"k8s.io", true},
		{"a", true},
		{"A-b_c.9", true},
		{strings.Repeat("a", MaxLength), true},
		{strings.Repeat("a", MaxLength+1), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"a..b", false},
		{"a/b", false},
		{"a b", false},
		{"ü", false},
	} {
		err := Validate(tc.name)
		if tc.ok && err != nil {
			t.Errorf("Validate(%q) = %v, want nil", tc.name, err)
		}
		if !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("Validate(%q) = %v, want InvalidArgument", tc.name, err)
		}
	}
}

func TestNamespaceRequired(t *testing.T) {
	for _, tc := range []struct {
		desc string
		ctx  context.Context
		want string
	}{
		{"absent", context.Background(), ""},
		{"empty", scope.WithNamespace(context.Background(), ""), ""},
		{"invalid", scope.WithNamespace(context.Background(), "a/b"), ""},
		{"valid", scope.WithNamespace(context.Background(), "ns1"), "ns1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := NamespaceRequired(tc.ctx)
			if tc.want == "" {
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
