package shim

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keel-runtime/keel/sdk/errdefs"
	keelruntime "github.com/keel-runtime/keel/sdk/runtime"
)

// TestWireTypesMirrorSDK: the shim's wire types have sdk/runtime's fields,
// names and kinds alike (gob matches them by name: a shim of an older
// plugin sent sdk/runtime's own types), and its constants the same values.
func TestWireTypesMirrorSDK(t *testing.T) {
	for _, pair := range []struct{ shim, sdk any }{
		{IO{}, keelruntime.IO{}},
		{ExitStatus{}, keelruntime.ExitStatus{}},
		{ProcessInfo{}, keelruntime.ProcessInfo{}},
		{TaskState{}, keelruntime.TaskState{}},
		{Event{}, keelruntime.Event{}},
	} {
		a, b := reflect.TypeOf(pair.shim), reflect.TypeOf(pair.sdk)
		if a.NumField() != b.NumField() {
			t.Errorf("%s has %d fields, sdk/runtime's %d", a.Name(), a.NumField(), b.NumField())
			continue
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			if fa.Name != fb.Name || fa.Type.Kind() != fb.Type.Kind() || (fa.Type.Kind() == reflect.Struct && fa.Type.NumField() != fb.Type.NumField()) {
				t.Errorf("%s.%s is %s; sdk/runtime's %s.%s is %s", a.Name(), fa.Name, fa.Type, b.Name(), fb.Name, fb.Type)
			}
		}
	}
	for _, c := range []struct{ shim, sdk any }{
		{StatusUnknown, keelruntime.StatusUnknown}, {StatusCreated, keelruntime.StatusCreated},
		{StatusRunning, keelruntime.StatusRunning}, {StatusStopped, keelruntime.StatusStopped},
		{StatusPaused, keelruntime.StatusPaused}, {StatusPausing, keelruntime.StatusPausing},
		{TopicCreate, keelruntime.TopicCreate}, {TopicStart, keelruntime.TopicStart},
		{TopicExit, keelruntime.TopicExit}, {TopicOOM, keelruntime.TopicOOM},
		{TopicExecAdded, keelruntime.TopicExecAdded}, {TopicExecStarted, keelruntime.TopicExecStarted},
		{TopicPaused, keelruntime.TopicPaused}, {TopicResumed, keelruntime.TopicResumed},
		{TopicDelete, keelruntime.TopicDelete},
	} {
		if fmt.Sprint(c.shim) != fmt.Sprint(c.sdk) {
			t.Errorf("shim has %v, sdk/runtime %v", c.shim, c.sdk)
		}
	}
	for s := StatusUnknown; s <= StatusPausing+1; s++ {
		if int(s) != int(keelruntime.Status(s)) || s.String() != keelruntime.Status(s).String() {
			t.Errorf("status %d: shim says %s, sdk/runtime %s", s, s, keelruntime.Status(s))
		}
	}
}

// TestCodesMatchSDK: the codes the shim sends for each class are
// sdk/errdefs' gRPC codes, and what ErrorFromCode restores is what
// sdk/errdefs' FromGRPC would: the same message and class.
func TestCodesMatchSDK(t *testing.T) {
	classes := []error{
		errdefs.ErrUnknown, errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists,
		errdefs.ErrPermissionDenied, errdefs.ErrResourceExhausted, errdefs.ErrFailedPrecondition,
		errdefs.ErrConflict, errdefs.ErrAborted, errdefs.ErrOutOfRange, errdefs.ErrNotImplemented,
		errdefs.ErrInternal, errdefs.ErrUnavailable, errdefs.ErrDataLoss,
		context.Canceled, context.DeadlineExceeded, syscall.ENOSPC, syscall.EDQUOT, errors.New("no class"),
	}
	for _, class := range classes {
		err := fmt.Errorf("task %q: %w", "x", class)
		if got, want := errCode(err), int(status.Code(errdefs.ToGRPC(err))); got != want {
			t.Errorf("%v: code %d, sdk/errdefs says %d", err, got, want)
		}
	}
	for code := 1; code <= 16; code++ { // 0 is no error
		for _, msg := range []string{"", "task x: gone", "task x: gone: not found", "unavailable"} {
			got := ErrorFromCode(code, msg)
			want := errdefs.FromGRPC(status.Error(codes.Code(code), msg))
			if got.Error() != want.Error() {
				t.Errorf("code %d %q: %q, sdk/errdefs says %q", code, msg, got, want)
			}
			for _, class := range classes {
				if errors.Is(got, class) != errors.Is(want, class) {
					t.Errorf("code %d %q: errors.Is(%v) = %t, sdk/errdefs' %t", code, msg, class, errors.Is(got, class), errors.Is(want, class))
				}
			}
		}
	}
}
