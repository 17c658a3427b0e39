package kafka

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed Kafka operation: what Ferry was doing and why it
// failed. It keeps its cause for errors.Is and errors.As, and carries the
// gRPC status Code gives the cause, so that status.FromError and
// status.Convert at the edge answer the caller with the right code and the
// message "Op: cause".
type Error struct {
	// Op says what Ferry was doing, as a gerund phrase: "producing to
	// topic \"orders\"".
	Op string
	// Err is the cause, from franz-go or the broker.
	Err error
}

var _ interface{ GRPCStatus() *status.Status } = (*Error)(nil)

// Wrap returns err as an *Error for op. A nil err stays nil, and an error
// that already carries a gRPC status (an *Error among them) is returned as
// it is: its code was chosen where it was made.
func Wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return err
	}
	return &Error{Op: op, Err: err}
}

// Error returns "Op: cause", or the cause alone without an Op.
func (e *Error) Error() string {
	if e.Op == "" {
		return e.Err.Error()
	}
	return e.Op + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus returns the status a caller gets for e: Code's code for the
// cause, with e's message.
func (e *Error) GRPCStatus() *status.Status { return status.New(Code(e.Err), e.Error()) }

// classes is Ferry's one table from Kafka errors to gRPC codes, searched
// in order with errors.Is. An error that matches none of them is
// UNAVAILABLE: a connection that failed, a leader that moved, a retriable
// error that stayed: the same call may succeed later.
var classes = []struct {
	code codes.Code
	errs []error
}{
	// The caller's deadline, or the record's delivery timeout
	// (clusters[].producer.delivery_timeout).
	{codes.DeadlineExceeded, []error{context.DeadlineExceeded, kgo.ErrRecordTimeout}},
	{codes.Canceled, []error{context.Canceled}},
	{codes.NotFound, []error{kerr.UnknownTopicOrPartition}},
	// A record or batch over the broker's limit is RESOURCE_EXHAUSTED, as
	// grpc-go answers a message over the server's limit; so is a producer
	// whose buffer is full (clusters[].producer.max_buffered_records).
	{codes.ResourceExhausted, []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kgo.ErrMaxBuffered}},
	{codes.InvalidArgument, []error{kerr.InvalidRecord, kerr.InvalidTopicException, kerr.InvalidTimestamp, kerr.CorruptMessage}},
	{codes.PermissionDenied, []error{kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed}},
	{codes.Unauthenticated, []error{kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState}},
}

// Code returns the gRPC code for a Kafka error: OK for nil, the code of
// Ferry's table for the errors it names (see classes), the code of an
// error that carries a gRPC status already, and UNAVAILABLE for the rest.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	for _, c := range classes {
		for _, target := range c.errs {
			if errors.Is(err, target) {
				return c.code
			}
		}
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if _, own := se.(*Error); !own {
			return se.GRPCStatus().Code()
		}
	}
	return codes.Unavailable
}
