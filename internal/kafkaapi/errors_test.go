package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestErrorsAtTheEdge: the engine's errors answer the gRPC code and
// message they always did, and keep their cause for errors.Is and As.
func TestErrorsAtTheEdge(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	for _, tc := range []struct {
		err   error
		code  codes.Code
		msg   string
		cause error
	}{
		{closing("Ferry is shutting down"), codes.Unavailable, "Ferry is shutting down", ErrClosing},
		{closing("the group member closed"), codes.Unavailable, "the group member closed", ErrClosing},
		{&Error{Code: codes.Unavailable, Msg: cause.Error(), Err: cause}, codes.Unavailable, "dial tcp: refused", cause},
		{contextError(context.Canceled), codes.Canceled, "context canceled", context.Canceled},
		{contextError(context.DeadlineExceeded), codes.DeadlineExceeded, "context deadline exceeded", context.DeadlineExceeded},
		{errorf(codes.InvalidArgument, "offset %d", 3), codes.InvalidArgument, "offset 3", nil},
		{&NotOwnedError{Topic: "t", Group: "g", Partition: 2}, codes.FailedPrecondition,
			`partition 2 of topic "t" is not assigned to this Ferry instance in group "g" (any more); its unacknowledged messages are delivered again by its owner`, nil},
	} {
		st, ok := status.FromError(tc.err)
		if !ok || st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("%v: status %v %q (%v), want %v %q", tc.err, st.Code(), st.Message(), ok, tc.code, tc.msg)
		}
		if tc.cause != nil && !errors.Is(tc.err, tc.cause) {
			t.Errorf("%v: cause %v lost", tc.err, tc.cause)
		}
		if tc.cause != ErrClosing && errors.Is(tc.err, ErrClosing) {
			t.Errorf("%v: is ErrClosing", tc.err)
		}
		// kafkaErr keeps an error that carries a status.
		if got := kafkaErr("doing", tc.err); got != tc.err {
			t.Errorf("kafkaErr replaced %v with %v", tc.err, got)
		}
	}
	wrapped := fmt.Errorf("setting offsets: %w", &NotOwnedError{Topic: "t", Group: "g"})
	var no *NotOwnedError
	if !errors.As(wrapped, &no) || status.Code(wrapped) != codes.FailedPrecondition {
		t.Errorf("wrapped: As %v, code %v", errors.As(wrapped, &no), status.Code(wrapped))
	}
}
