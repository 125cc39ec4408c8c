package errdefs

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// TestConvertingTwiceIsHarmless: the interceptors convert every call, so a
// conversion on top of one (a hand conversion left over, an error passed
// on from one hop to the next) must change nothing.
func TestConvertingTwiceIsHarmless(t *testing.T) {
	st := status.Error(codes.NotFound, `snapshot "k": not found`)
	if got := ToGRPC(st); got != st {
		t.Errorf("ToGRPC of a status error made %v, want it kept", got)
	}
	native := fmt.Errorf("snapshot %q: %w", "k", ErrNotFound)
	if got := FromGRPC(native); got != native {
		t.Errorf("FromGRPC of a native error made %v, want it kept", got)
	}
	once := FromGRPC(st)
	if got := FromGRPC(once); got != once {
		t.Errorf("FromGRPC of its own result made %v, want it kept", got)
	}
	wrapped := fmt.Errorf("snapshotter.x: %w", once)
	if got := FromGRPC(wrapped); got != wrapped {
		t.Errorf("FromGRPC of its wrapped result made %v, want it kept", got)
	}
	if got := FromGRPC(io.EOF); got != io.EOF {
		t.Errorf("FromGRPC(io.EOF) = %v", got)
	}
}

// TestCodeKept: an error that crossed answers status.Code with the code it
// crossed as (go-plugin's own clients ask), and goes on with it, wrapped
// or not, as does a status error wrapped with more context.
func TestCodeKept(t *testing.T) {
	for _, code := range []codes.Code{codes.NotFound, codes.Unavailable, codes.Canceled, codes.Unauthenticated} {
		back := FromGRPC(status.Error(code, "x"))
		if got := status.Code(back); got != code {
			t.Errorf("status.Code after FromGRPC = %v, want %v", got, code)
		}
		if got := status.Code(ToGRPC(back)); got != code {
			t.Errorf("status.Code after FromGRPC, ToGRPC = %v, want %v", got, code)
		}
		if got := status.Code(ToGRPC(fmt.Errorf("y: %w", status.Error(code, "x")))); got != code {
			t.Errorf("a wrapped %v status crossed as %v", code, got)
		}
	}
}
