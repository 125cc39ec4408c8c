// Package errdefs holds the error classes shared by keeld, its plugins and
// its clients. They are containerd's classes (github.com/containerd/errdefs),
// re-exported so plugin authors import only keel's sdk, and they survive a
// gRPC hop as status codes (a small mapping of our own rather than
// containerd's errgrpc, whose type registry costs every plugin memory):
// the server side converts with ToGRPC, the client side with FromGRPC, and
// errdefs.IsNotFound(err) holds on the far side. Neither is called by hand:
// keel's gRPC servers and clients convert every call once, in the
// interceptors of grpc.go.
//
// Classify at the source by wrapping a class with %w:
//
//	return fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
package errdefs

import (
	"context"
	"errors"
	"strings"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The error classes.
var (
	ErrUnknown            = cerrdefs.ErrUnknown
	ErrInvalidArgument    = cerrdefs.ErrInvalidArgument
	ErrNotFound           = cerrdefs.ErrNotFound
	ErrAlreadyExists      = cerrdefs.ErrAlreadyExists
	ErrPermissionDenied   = cerrdefs.ErrPermissionDenied
	ErrResourceExhausted  = cerrdefs.ErrResourceExhausted
	ErrFailedPrecondition = cerrdefs.ErrFailedPrecondition
	ErrConflict           = cerrdefs.ErrConflict
	ErrAborted            = cerrdefs.ErrAborted
	ErrOutOfRange         = cerrdefs.ErrOutOfRange
	ErrNotImplemented     = cerrdefs.ErrNotImplemented
	ErrInternal           = cerrdefs.ErrInternal
	ErrUnavailable        = cerrdefs.ErrUnavailable
	ErrDataLoss           = cerrdefs.ErrDataLoss
)

// Predicates, one per class. They see through wrapping and through a gRPC hop
// once the error has passed FromGRPC.
func IsUnknown(err error) bool            { return cerrdefs.IsUnknown(err) }
func IsInvalidArgument(err error) bool    { return cerrdefs.IsInvalidArgument(err) }
func IsNotFound(err error) bool           { return cerrdefs.IsNotFound(err) }
func IsAlreadyExists(err error) bool      { return cerrdefs.IsAlreadyExists(err) }
func IsPermissionDenied(err error) bool   { return cerrdefs.IsPermissionDenied(err) }
func IsResourceExhausted(err error) bool  { return cerrdefs.IsResourceExhausted(err) }
func IsFailedPrecondition(err error) bool { return cerrdefs.IsFailedPrecondition(err) }
func IsConflict(err error) bool           { return cerrdefs.IsConflict(err) }
func IsAborted(err error) bool            { return cerrdefs.IsAborted(err) }
func IsOutOfRange(err error) bool         { return cerrdefs.IsOutOfRange(err) }
func IsNotImplemented(err error) bool     { return cerrdefs.IsNotImplemented(err) }
func IsInternal(err error) bool           { return cerrdefs.IsInternal(err) }
func IsUnavailable(err error) bool        { return cerrdefs.IsUnavailable(err) }
func IsDataLoss(err error) bool           { return cerrdefs.IsDataLoss(err) }
func IsCanceled(err error) bool           { return errors.Is(err, context.Canceled) }
func IsDeadlineExceeded(err error) bool   { return errors.Is(err, context.DeadlineExceeded) }

// classes maps each class to its gRPC code, in the order ToGRPC tests them.
var classes = []struct {
	class error
	code  codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrResourceExhausted, codes.ResourceExhausted},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrConflict, codes.FailedPrecondition},
	{ErrAborted, codes.Aborted},
	{ErrOutOfRange, codes.OutOfRange},
	{ErrNotImplemented, codes.Unimplemented},
	{ErrInternal, codes.Internal},
	{ErrUnavailable, codes.Unavailable},
	{ErrDataLoss, codes.DataLoss},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
	{ErrUnknown, codes.Unknown},
}

// ToGRPC turns err into a gRPC status error carrying its class and its
// message. Errors that belong to no class become codes.Unknown.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	for _, c := range classes {
		if errors.Is(err, c.class) {
			return status.Error(c.code, err.Error())
		}
	}
	// A full disk or quota is the same class wherever an OS call hit it.
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	// A status error wrapped with more context keeps its code.
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// FromGRPC turns a gRPC status error back into an error of its class, with
// the same message. Other errors, and errors FromGRPC already made, pass
// unchanged.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	var remote *remoteError
	if errors.As(err, &remote) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var class error = ErrUnknown
	for _, c := range classes {
		if c.code == st.Code() {
			class = c.class
			break
		}
	}
	// The message usually ends with the class's own text already.
	msg := strings.TrimSuffix(st.Message(), ": "+class.Error())
	return &remoteError{msg: msg, class: class, code: st.Code()}
}

// remoteError is an error that crossed a gRPC hop: its message and class.
// It keeps its status code too, so that code which asks gRPC for an
// error's code (status.Code; go-plugin does) gets the one that crossed.
type remoteError struct {
	msg   string
	class error
	code  codes.Code
}

func (e *remoteError) Error() string {
	if e.msg == "" || e.msg == e.class.Error() {
		return e.class.Error()
	}
	return e.msg + ": " + e.class.Error()
}

func (e *remoteError) Unwrap() error { return e.class }

// GRPCStatus is the status the error crossed as, message and class text
// as ToGRPC would send them on.
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.Error()) }
