package cri

import (
	"strings"
	"testing"
)

// TestCapped: ExecSync's output buffers keep the first max bytes and
// swallow the rest without failing the process's writes.
func TestCapped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"under", []string{"ab", "cd"}, "abcd"},
		{"exactly", []string{"abcde"}, "abcde"},
		{"across a write", []string{"abc", "defg"}, "abcde"},
		{"after full", []string{"abcde", "f", "gh"}, "abcde"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &capped{max: 5}
			for _, w := range tc.writes {
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write %q: %d, %v", w, n, err)
				}
			}
			if got := c.String(); got != tc.want {
				t.Errorf("kept %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewExecIDUnique(t *testing.T) {
	a, err := newExecID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newExecID()
	if a == b || !strings.HasPrefix(a, "cri-exec-") {
		t.Errorf("exec ids %q, %q", a, b)
	}
}
