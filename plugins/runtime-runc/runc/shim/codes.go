package shim

import (
	"context"
	"errors"
	"strings"
	"syscall"

	errdefs "github.com/containerd/errdefs"
)

// Error classes cross the shim's socket (and its ready pipe) as gRPC code
// numbers, as sdk/errdefs maps them; the shim does not link gRPC, so the
// numbers are spelled here, and TestCodesMatchSDK holds them to
// sdk/errdefs' ToGRPC and FromGRPC.
const (
	codeCanceled           = 1
	codeUnknown            = 2
	codeInvalidArgument    = 3
	codeDeadlineExceeded   = 4
	codeNotFound           = 5
	codeAlreadyExists      = 6
	codePermissionDenied   = 7
	codeResourceExhausted  = 8
	codeFailedPrecondition = 9
	codeAborted            = 10
	codeOutOfRange         = 11
	codeUnimplemented      = 12
	codeInternal           = 13
	codeUnavailable        = 14
	codeDataLoss           = 15
)

// classes maps each error class to its code, in sdk/errdefs' order: the
// first class an error is, and the first class of a code, win.
var classes = []struct {
	class error
	code  int
}{
	{errdefs.ErrInvalidArgument, codeInvalidArgument},
	{errdefs.ErrNotFound, codeNotFound},
	{errdefs.ErrAlreadyExists, codeAlreadyExists},
	{errdefs.ErrPermissionDenied, codePermissionDenied},
	{errdefs.ErrResourceExhausted, codeResourceExhausted},
	{errdefs.ErrFailedPrecondition, codeFailedPrecondition},
	{errdefs.ErrConflict, codeFailedPrecondition},
	{errdefs.ErrAborted, codeAborted},
	{errdefs.ErrOutOfRange, codeOutOfRange},
	{errdefs.ErrNotImplemented, codeUnimplemented},
	{errdefs.ErrInternal, codeInternal},
	{errdefs.ErrUnavailable, codeUnavailable},
	{errdefs.ErrDataLoss, codeDataLoss},
	{context.DeadlineExceeded, codeDeadlineExceeded},
	{context.Canceled, codeCanceled},
	{errdefs.ErrUnknown, codeUnknown},
}

// errCode is err's class as a gRPC code.
func errCode(err error) int {
	for _, c := range classes {
		if errors.Is(err, c.class) {
			return c.code
		}
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return codeResourceExhausted
	}
	return codeUnknown
}

// ErrorFromCode restores an error a shim reported with its class code:
// its message, and its class for errors.Is (sdk/errdefs' predicates).
func ErrorFromCode(code int, msg string) error {
	var class error = errdefs.ErrUnknown
	for _, c := range classes {
		if c.code == code {
			class = c.class
			break
		}
	}
	// The message usually ends with the class's own text already.
	return &classedError{msg: strings.TrimSuffix(msg, ": "+class.Error()), class: class}
}

// classedError is an error that crossed the shim's socket.
type classedError struct {
	msg   string
	class error
}

func (e *classedError) Error() string {
	if e.msg == "" || e.msg == e.class.Error() {
		return e.class.Error()
	}
	return e.msg + ": " + e.class.Error()
}

func (e *classedError) Unwrap() error { return e.class }
