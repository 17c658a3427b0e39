package kafkaapi

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrClosing is the cause of every error of a Service that is closing or
// of a group member that is leaving the group: the call may succeed
// against another Ferry instance, or again once a new member joined.
// Test for it with errors.Is.
var ErrClosing = errors.New("closing")

// Error is an error of the engine. Its gRPC status, which the gRPC and
// REST faces answer with, is Code and Msg; Err, when set, is its cause.
// status.FromError and status.Code see through it (GRPCStatus), and
// errors.Is and errors.As see its cause (Unwrap).
type Error struct {
	Code codes.Code
	Msg  string
	Err  error
}

// errorf returns an *Error with code and a formatted message, without cause.
func errorf(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// closing returns an UNAVAILABLE error caused by ErrClosing.
func closing(msg string) *Error {
	return &Error{Code: codes.Unavailable, Msg: msg, Err: ErrClosing}
}

// contextError returns the error of a call whose ctx ended: CANCELLED or
// DEADLINE_EXCEEDED, as status.FromContextError answers, caused by err.
func contextError(err error) *Error {
	st := status.FromContextError(err)
	return &Error{Code: st.Code(), Msg: st.Message(), Err: err}
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus returns the status the faces answer with.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Msg) }

// NotOwnedError is the error of acknowledging, or handing back, a message
// of a partition this Ferry instance is not assigned in the group (any
// more): its new owner delivers the message again. It is
// FAILED_PRECONDITION, which Ferry's faces skip in a stream of
// acknowledgements.
type NotOwnedError struct {
	Topic, Group string
	Partition    int32
}

// Error describes the partition and what becomes of its messages.
func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("partition %d of topic %q is not assigned to this Ferry instance in group %q (any more); its unacknowledged messages are delivered again by its owner",
		e.Partition, e.Topic, e.Group)
}

// GRPCStatus returns FAILED_PRECONDITION with the error's message.
func (e *NotOwnedError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}

// Interface guards: the faces answer with the statuses these carry.
var (
	_ interface{ GRPCStatus() *status.Status } = (*Error)(nil)
	_ interface{ GRPCStatus() *status.Status } = (*NotOwnedError)(nil)
)
