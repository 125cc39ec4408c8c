package errdefs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		class error
		is    func(error) bool
	}{
		{"invalid argument", ErrInvalidArgument, IsInvalidArgument},
		{"not found", ErrNotFound, IsNotFound},
		{"already exists", ErrAlreadyExists, IsAlreadyExists},
		{"permission denied", ErrPermissionDenied, IsPermissionDenied},
		{"resource exhausted", ErrResourceExhausted, IsResourceExhausted},
		{"failed precondition", ErrFailedPrecondition, IsFailedPrecondition},
		{"aborted", ErrAborted, IsAborted},
		{"out of range", ErrOutOfRange, IsOutOfRange},
		{"not implemented", ErrNotImplemented, IsNotImplemented},
		{"internal", ErrInternal, IsInternal},
		{"unavailable", ErrUnavailable, IsUnavailable},
		{"data loss", ErrDataLoss, IsDataLoss},
		{"unknown", ErrUnknown, IsUnknown},
		{"canceled", context.Canceled, IsCanceled},
		{"deadline", context.DeadlineExceeded, IsDeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := fmt.Errorf("snapshot %q: %w", "k", tc.class)
			back := FromGRPC(ToGRPC(orig))
			if !tc.is(back) {
				t.Fatalf("class lost over the hop: %v", back)
			}
			// A second hop (plugin -> keeld -> client) keeps it too.
			if again := FromGRPC(ToGRPC(back)); !tc.is(again) {
				t.Fatalf("class lost over two hops: %v", again)
			}
		})
	}
}

func TestUnclassifiedBecomesUnknown(t *testing.T) {
	back := FromGRPC(ToGRPC(fmt.Errorf("plain failure")))
	if !IsUnknown(back) {
		t.Fatalf("want unknown, got %v", back)
	}
}

func TestMessageKept(t *testing.T) {
	orig := fmt.Errorf("snapshot %q: %w", "k", ErrNotFound)
	once := FromGRPC(ToGRPC(orig))
	twice := FromGRPC(ToGRPC(once))
	for _, err := range []error{once, twice} {
		if err.Error() != orig.Error() {
			t.Fatalf("message changed over the hop: %q, want %q", err.Error(), orig.Error())
		}
	}
}

// TestFullDiskIsResourceExhausted: an OS error from a full disk crosses
// the hop as ResourceExhausted, its message ("no space left on device")
// kept.
func TestFullDiskIsResourceExhausted(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		orig := fmt.Errorf("write /x: %w", &os.PathError{Op: "write", Path: "/x", Err: errno})
		back := FromGRPC(ToGRPC(orig))
		if !IsResourceExhausted(back) || !strings.Contains(back.Error(), errno.Error()) {
			t.Errorf("%v over the hop: %v, want resource exhausted naming %q", errno, back, errno.Error())
		}
	}
}
