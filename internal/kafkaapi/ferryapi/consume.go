package ferryapi

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

// errHalfClosed ends a Consume stream whose client half-closed: with no
// more credits or acknowledgements to come, the stream ends with OK.
var errHalfClosed = errors.New("client half-closed the stream")

// Consume serves one consumer of a group over a stream.
//
// The handler's goroutine opens the session with the first request and
// then delivers: while the client has credits it takes messages with
// TryNext, which costs no goroutine switch when messages are buffered, and
// blocks in Next only when none are. A reader goroutine takes the later
// requests, adds their credits and applies their acks and nacks. It ends
// with the stream: grpc-go unblocks its Recv once the handler returned. It
// reports why the stream should end by cancelling the delivery context with
// a cause; the handler's return closes the session under the same lock the
// reader applies requests under, so no ack reaches a closed session.
func (s *Server) Consume(stream grpc.BidiStreamingServer[kafkav1.ConsumeRequest, kafkav1.ConsumeResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if err := required("topic", first.GetTopic(), "group", first.GetGroup()); err != nil {
		return err
	}
	if first.GetCredits() < 0 {
		return invalid("credits", "%d is negative", first.GetCredits())
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	sess, err := s.svc.Open(ctx, first.GetCluster(), first.GetGroup(), first.GetTopic())
	if err != nil {
		return err
	}
	c := &consumer{
		ctx:  stream.Context(),
		s:    s,
		sess: sess,
		key:  s.subKey(first.GetCluster(), first.GetGroup(), first.GetTopic()),
		wake: make(chan struct{}, 1),
	}
	defer c.close()
	if err := c.apply(first); err != nil {
		return err
	}
	go c.read(stream, cancel)

	out := &kafkav1.ConsumeResponse{}
	bufs := make([]messageBuf, maxConsumeBatch)
	msgs := make([]kafkaapi.Message, 0, maxConsumeBatch)
	vf := first.GetValueFormat()
	for {
		credits := c.credits.Load()
		if credits <= 0 {
			select {
			case <-c.wake:
				continue
			case <-ctx.Done():
				return c.endErr(ctx)
			}
		}
		n := int(min(credits, maxConsumeBatch))
		msgs = sess.TakeUpTo(msgs[:0], n, maxConsumeBytes)
		if len(msgs) == 0 {
			m, err := sess.Next(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return c.endErr(ctx)
				}
				return err
			}
			msgs = sess.TakeUpTo(append(msgs, *m), n-1, maxConsumeBytes)
		}
		out.Messages = out.Messages[:0]
		for i := range msgs {
			out.Messages = append(out.Messages, bufs[i].fill(&msgs[i], vf))
		}
		spans := kafkaapi.TraceDeliveries(ctx, first.GetGroup(), len(msgs), func(i int) *kafkaapi.Message { return &msgs[i] })
		err := stream.Send(out)
		kafkaapi.EndDeliveries(spans, err)
		if err != nil {
			return err
		}
		c.credits.Add(-int64(len(msgs)))
	}
}

// maxConsumeBatch bounds the messages of one ConsumeResponse: enough to
// spread a gRPC message's cost over many, few enough to keep responses
// small and the first message early.
const maxConsumeBatch = 256

// maxConsumeBytes bounds the estimated size (kafkaapi.Message.Size) of one
// ConsumeResponse's messages, unless a single message is larger. It keeps
// the encoded response within 32 KiB: grpc-go takes marshal and receive
// buffers from size classes, and the next class above 32 KiB is 1 MiB,
// which it zeroes on every use — at 100-byte messages that doubled the cost
// of a response on both ends.
const maxConsumeBytes = 32<<10 - 512

// consumer is one Consume stream's state shared by its two goroutines.
type consumer struct {
	// ctx is the stream's: acks are traced as its.
	ctx  context.Context
	s    *Server
	sess *kafkaapi.Session
	key  subKey

	credits atomic.Int64
	wake    chan struct{} // credits were added

	mu     sync.Mutex // held while applying a request, and to close
	closed bool
	refs   []kafkaapi.Ref // a request's acks, reused; guarded by mu
}

// read applies the stream's requests after the first, until it ends.
func (c *consumer) read(stream grpc.BidiStreamingServer[kafkav1.ConsumeRequest, kafkav1.ConsumeResponse], cancel context.CancelCauseFunc) {
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errHalfClosed
			}
			cancel(err)
			return
		}
		if err := c.check(req); err != nil {
			cancel(err)
			return
		}
		if err := c.apply(req); err != nil {
			cancel(err)
			return
		}
	}
}

// check rejects a later request that names another cluster, topic or group
// than the first, or takes credits back.
func (c *consumer) check(req *kafkav1.ConsumeRequest) error {
	for _, f := range [...]struct{ name, got, want string }{
		{"cluster", req.GetCluster(), c.key.cluster}, // the default spelled out
		{"topic", req.GetTopic(), c.key.topic},
		{"group", req.GetGroup(), c.key.group},
	} {
		if f.got != "" && f.got != f.want {
			return invalid(f.name, "%q differs from %q of the stream's first request: a stream consumes one topic in one group", f.got, f.want)
		}
	}
	if req.GetCredits() < 0 {
		return invalid("credits", "%d is negative", req.GetCredits())
	}
	return nil
}

// apply acknowledges and hands back the request's messages and adds its
// credits. A FAILED_PRECONDITION (the partition moved to another member,
// which redelivers) is logged and skipped; any other error ends the
// stream.
func (c *consumer) apply(req *kafkav1.ConsumeRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if acks := req.GetAcks(); len(acks) > 0 {
		c.refs = c.refs[:0]
		for _, r := range acks {
			c.refs = append(c.refs, kafkaapi.Ref{Partition: r.GetPartition(), Offset: r.GetOffset()})
		}
		for _, f := range c.sess.AckAll(c.ctx, c.refs) {
			if err := c.skip("acknowledging", f.Ref, f.Err); err != nil {
				return err
			}
		}
	}
	for _, r := range req.GetNacks() {
		if err := c.sess.Nack(r.GetPartition(), r.GetOffset()); err != nil {
			if err = c.skip("handing back", kafkaapi.Ref{Partition: r.GetPartition(), Offset: r.GetOffset()}, err); err != nil {
				return err
			}
		}
	}
	if n := req.GetCredits(); n > 0 {
		c.credits.Add(int64(n))
		signal(c.wake)
	}
	return nil
}

// skip logs and drops a FAILED_PRECONDITION and returns any other error.
func (c *consumer) skip(what string, r kafkaapi.Ref, err error) error {
	if status.Code(err) != codes.FailedPrecondition {
		return err
	}
	c.s.logger.Info(what+" a message on a Consume stream failed: skipped", "cluster", c.key.cluster,
		"group", c.key.group, "topic", c.key.topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	return nil
}

// close ends the session: what was delivered and not acknowledged is
// redelivered at once.
func (c *consumer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.sess.Close(true)
}

// endErr is the stream's status once its delivery context ended.
func (c *consumer) endErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errHalfClosed) {
		return nil
	}
	return streamErr(ctx)
}
