package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCode: every Kafka error Ferry meets gets the code of the one table,
// found through any wrapping, and whatever the table does not name is
// UNAVAILABLE.
func TestCode(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{kgo.ErrRecordTimeout, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{kerr.UnknownTopicOrPartition, codes.NotFound},
		{kerr.MessageTooLarge, codes.ResourceExhausted},
		{kerr.RecordListTooLarge, codes.ResourceExhausted},
		{kgo.ErrMaxBuffered, codes.ResourceExhausted},
		{kerr.InvalidRecord, codes.InvalidArgument},
		{kerr.InvalidTopicException, codes.InvalidArgument},
		{kerr.InvalidTimestamp, codes.InvalidArgument},
		{kerr.CorruptMessage, codes.InvalidArgument},
		{kerr.TopicAuthorizationFailed, codes.PermissionDenied},
		{kerr.GroupAuthorizationFailed, codes.PermissionDenied},
		{kerr.ClusterAuthorizationFailed, codes.PermissionDenied},
		{kerr.SaslAuthenticationFailed, codes.Unauthenticated},
		{kerr.UnsupportedSaslMechanism, codes.Unauthenticated},
		{kerr.IllegalSaslState, codes.Unauthenticated},
		{refused, codes.Unavailable},
		{io.EOF, codes.Unavailable},
		{kerr.NotLeaderForPartition, codes.Unavailable},
		{kerr.RequestTimedOut, codes.Unavailable},
		{kerr.CoordinatorNotAvailable, codes.Unavailable},
		{kgo.ErrClientClosed, codes.Unavailable},
		{errors.New("something else"), codes.Unavailable},
		{status.Error(codes.FailedPrecondition, "decided elsewhere"), codes.FailedPrecondition},
	} {
		name := "nil"
		if tc.err != nil {
			name = tc.err.Error()
		}
		t.Run(name, func(t *testing.T) {
			if got := Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if tc.err == nil {
				return
			}
			wrapped := fmt.Errorf("writing: %w", tc.err)
			if got := Code(wrapped); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", wrapped, got, tc.want)
			}
			if _, ok := tc.err.(interface{ GRPCStatus() *status.Status }); ok {
				return // Wrap keeps it; see TestWrap
			}
			st := status.Convert(Wrap("producing to topic \"t\"", wrapped))
			if st.Code() != tc.want || st.Message() != "producing to topic \"t\": "+wrapped.Error() {
				t.Errorf("status of the wrapped error: %v %q, want %v with Op: cause", st.Code(), st.Message(), tc.want)
			}
		})
	}
}

// TestWrap: Wrap keeps nil nil and a status as it is; its *Error keeps its
// cause for errors.Is and answers the edge with the cause's code and
// "Op: cause".
func TestWrap(t *testing.T) {
	if err := Wrap("listing", nil); err != nil {
		t.Errorf("Wrap(nil) = %v", err)
	}
	st := status.Error(codes.InvalidArgument, "bad partition")
	if err := Wrap("producing", st); err != st {
		t.Errorf("Wrap(status) = %v, want the status as it was", err)
	}
	inner := Wrap("listing offsets", kerr.UnknownTopicOrPartition)
	if err := Wrap("reading", fmt.Errorf("starting: %w", inner)); status.Convert(err).Message() != "starting: listing offsets: "+kerr.UnknownTopicOrPartition.Error() {
		t.Errorf("Wrap of a wrapped *Error = %v, want it kept", err)
	}

	err := Wrap("producing to topic \"t\"", kerr.MessageTooLarge)
	var ke *Error
	if !errors.As(err, &ke) || ke.Op != "producing to topic \"t\"" || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("Wrap = %#v: want an *Error keeping its cause", err)
	}
	want := "producing to topic \"t\": " + kerr.MessageTooLarge.Error()
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	s, ok := status.FromError(err)
	if !ok || s.Code() != codes.ResourceExhausted || s.Message() != want {
		t.Errorf("status.FromError = %v %v, want RESOURCE_EXHAUSTED %q", s, ok, want)
	}
	if status.Code(fmt.Errorf("call: %w", err)) != codes.ResourceExhausted {
		t.Errorf("status.Code through wrapping = %v", status.Code(fmt.Errorf("call: %w", err)))
	}
	if got := Wrap("", io.EOF).Error(); got != io.EOF.Error() {
		t.Errorf("without an Op: %q, want the cause alone", got)
	}
}
