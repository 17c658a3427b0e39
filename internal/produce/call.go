package produce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/auth"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/tracing"
)

// Runtime is what every produce route's calls share: the lifetime records
// are written in, the request readers to wait for, the logger.
type Runtime struct {
	logger *slog.Logger

	// ctx bounds the writing of records. It is Ferry's lifetime, not the
	// call's: a record handed to the producer is written even if its caller
	// goes away, so a call is never half written without its null record.
	ctx context.Context
	// wg counts the goroutines of calls (request readers, acknowledgement
	// waiters), which can outlive their call by the time grpc-go takes to
	// cancel the stream once the handler returned; running counts them too,
	// for Close to say how many it abandoned.
	wg      sync.WaitGroup
	running atomic.Int64
}

// NewRuntime returns the shared state of produce calls. ctx bounds the
// writing of records and should end only after the gRPC server stopped.
func NewRuntime(ctx context.Context, logger *slog.Logger) *Runtime {
	return &Runtime{ctx: ctx, logger: logger}
}

// Close waits for the goroutines of every call to end. Call it after the
// gRPC server stopped, which ends the calls. When ctx ends first, Close
// stops waiting and says how many it left running: their calls are over,
// but a request reader among them may not have handed its call's last
// records to the producer. It is safe to call more than once.
func (rt *Runtime) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		rt.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if n := rt.running.Load(); n > 0 {
			return fmt.Errorf("abandoning %d goroutines of calls still running, whose request records may be cut short: %w", n, ctx.Err())
		}
		return nil
	}
}

// goCall runs f in a goroutine of a call, which Close waits for.
func (rt *Runtime) goCall(f func()) {
	rt.wg.Add(1)
	rt.running.Add(1)
	go func() {
		defer rt.wg.Done()
		defer rt.running.Add(-1)
		f()
	}()
}

// Serve carries one call of method m over Kafka.
func (r *Route) Serve(ss grpc.ServerStream, m *protoreg.Method, md metadata.MD) error {
	var id *auth.Identity
	if r.cfg.KeyFromIdentity || r.cfg.IdentityHeader != "" {
		if id = auth.FromContext(ss.Context()); id == nil {
			return status.Errorf(codes.Unauthenticated, "%s writes the caller's identity to Kafka: call with credentials", m.Path)
		}
	}
	c := newCall(r, m, ss, md, id)
	if c.span != nil {
		// A call that ends before its request stream did (a client gone
		// while waiting for the reply reader) writes nothing more.
		defer c.endStream()
	}
	if r.reader == nil {
		return c.serveOneWay()
	}
	return c.serveRequestReply()
}

// call is one gRPC call being carried over Kafka.
type call struct {
	h      *Runtime
	r      *Route
	m      *protoreg.Method
	ss     grpc.ServerStream
	corrID string
	// idempotent is set when the client sent an idempotency-key.
	idempotent bool
	key        []byte
	headers    []kgo.RecordHeader
	// fields is what the route reads from the call's request messages;
	// nil when nothing.
	fields *requestFields

	// progress is when the call last moved (a request message written or a
	// reply read), in Unix nanoseconds, for the route's timeout.
	progress atomic.Int64

	// mu orders the call's records: no record follows the null record, and
	// the null record is written once.
	mu       sync.Mutex
	ended    bool
	produced int

	// acks counts records not yet acknowledged by Kafka.
	acks sync.WaitGroup
	// failed is closed on the first record Kafka did not take; err holds
	// why.
	failOnce sync.Once
	failed   chan struct{}
	err      error

	// span is the call's produce span, nil unless the call is traced: it
	// ends once the request stream ended and Kafka acknowledged or failed
	// every record written (unacked counts them).
	span       trace.Span
	unacked    atomic.Int64
	streamDone atomic.Bool
	spanEnded  atomic.Bool

	// start is when the call reached the route, set when the route
	// measures the time to the first reply.
	start time.Time
	// reqBytes and respBytes count the bytes of the call's messages, nil
	// unless the route measures them.
	reqBytes, respBytes Adder
}

// newCall prepares a call; id is the caller's identity when the route
// writes it.
func newCall(r *Route, m *protoreg.Method, ss grpc.ServerStream, md metadata.MD, id *auth.Identity) *call {
	c := &call{h: r.rt, r: r, m: m, ss: ss, failed: make(chan struct{}), fields: r.fields[m.Path]}
	if r.meter.FirstReply != nil {
		c.start = time.Now()
	}
	if r.meter.Bytes != nil {
		c.reqBytes, c.respBytes = r.meter.Bytes(m.Path)
	}
	var prefix string
	prefix, c.idempotent = layout.CorrelationPrefix(md)
	c.corrID = layout.CorrelationID(prefix, r.suffixes[m.Path])
	c.key = layout.RequestKey(r.cfg.Key, c.corrID)
	if r.cfg.KeyFromIdentity {
		c.key = []byte(id.Name)
	}
	req := layout.Request{Service: m.Service, Method: m.Name, CorrelationID: c.corrID}
	if r.reader != nil {
		// Only request-reply routes write the layout's headers; a
		// one-way route's records carry overrides and metadata alone.
		req.ReplyTo = r.cfg.ReplyTo
	}
	if ctx := ss.Context(); tracing.Active(ctx) {
		// The records carry the produce span's trace context, in place of
		// the caller's traceparent, which the call's span continues.
		ctx, c.span = tracing.Start(ctx, "produce "+r.cfg.Topic, trace.SpanKindProducer,
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", r.cfg.Topic),
			attribute.String("ferry.route", r.Name),
			attribute.String("ferry.correlation_id", c.corrID))
		req.Trace = tracing.Of(ctx)
	}
	c.headers = r.layout.RequestHeaders(r.overrides, req, md, r.cfg.ForwardAuthorization)
	if h := r.cfg.IdentityHeader; h != "" {
		// Written last, and alone under its name: a metadata entry the
		// caller sent could otherwise pass for it.
		c.headers = slices.DeleteFunc(c.headers, func(rh kgo.RecordHeader) bool { return rh.Key == h })
		c.headers = append(c.headers, kgo.RecordHeader{Key: h, Value: []byte(id.Name)})
	}
	return c
}

// touch notes that the call moved.
func (c *call) touch() { c.progress.Store(time.Now().UnixNano()) }

// lastProgress is when the call last moved.
func (c *call) lastProgress() time.Time { return time.Unix(0, c.progress.Load()) }

var errEnded = errors.New("the call's request stream already ended")

// produce writes one request record; a nil value is the null record that
// ends the request stream. Records are handed to the producer under mu so
// they keep their order and nothing follows the null record.
func (c *call) produce(value []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return errEnded
	}
	// size is the request message's, which the route counts, whatever
	// the format written.
	size := len(value)
	if f := c.fields; f != nil && value != nil {
		m, err := f.decode(value, c.produced+1)
		if err != nil {
			return err
		}
		if c.r.format != nil {
			if value, err = c.r.format.Encode(m); err != nil {
				return status.Errorf(codes.InvalidArgument, "request message %d: %v; nothing of it was written", c.produced+1, err)
			}
		}
		if c.produced == 0 {
			f.apply(c, m)
		}
	}
	if c.span != nil {
		c.unacked.Add(1)
	}
	if value == nil {
		c.ended = true
		c.endStream()
	}
	c.produced++
	if value != nil && c.r.meter.Requests != nil {
		c.r.meter.Requests.Inc()
	}
	if value != nil && c.reqBytes != nil {
		c.reqBytes.Add(float64(size))
	}
	if value != nil && c.m.ClientStreaming && c.r.timeout() > 0 {
		c.touch()
	}
	c.acks.Add(1)
	rec := &kgo.Record{Topic: c.r.cfg.Topic, Key: c.key, Value: value, Headers: c.headers}
	c.r.producer.Produce(c.h.ctx, rec, c.acked)
	return nil
}

func (c *call) acked(_ *kgo.Record, err error) {
	if c.span != nil {
		if err != nil {
			c.span.SetStatus(otelcodes.Error, err.Error())
		}
		c.unacked.Add(-1)
		c.endSpan()
	}
	if err != nil {
		c.failOnce.Do(func() {
			c.err = err
			close(c.failed)
		})
		c.h.logger.Warn("producing request record", "route", c.r.Name, "topic", c.r.cfg.Topic, "correlation_id", c.corrID, "err", err)
	}
	c.acks.Done()
}

// abandon ends the request stream when the call stops before the client
// half-closed (cancel, timeout, error): the null record tells the backend
// the call is over. Nothing is written for a call that wrote nothing.
func (c *call) abandon() {
	c.mu.Lock()
	write := !c.ended && c.produced > 0 && c.r.reader != nil
	c.mu.Unlock()
	if write {
		_ = c.produce(nil)
	}
	c.stop()
}

// stop makes every later produce fail, so a request reader still running
// after the call ended writes nothing more.
func (c *call) stop() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	c.endStream()
}

// endStream notes, for the produce span, that no record follows.
func (c *call) endStream() {
	if c.span != nil {
		c.streamDone.Store(true)
		c.endSpan()
	}
}

// endSpan ends the produce span once the request stream ended and every
// record written was acknowledged or failed; it may be called by the
// producer's callback and by the call at once.
func (c *call) endSpan() {
	if c.streamDone.Load() && c.unacked.Load() == 0 && c.spanEnded.CompareAndSwap(false, true) {
		c.span.End()
	}
}

// receive reads the client's request messages until it half-closes and, if
// write is set, writes each as a record, then the null record when the route
// has a reply topic. held is a message read but not yet written.
//
// For a method whose request is not a stream, a message is held until the
// next read tells whether the client half-closed: a unary request then goes
// to the producer together with its null record, and both travel in one
// produce request, where writing the message at once would often cost a
// second broker round trip for the null record. A streaming request is
// written message by message, as it arrives.
func (c *call) receive(write bool, held []byte) error {
	hold := !c.m.ClientStreaming
	for {
		var f frame.Frame
		err := c.ss.RecvMsg(&f)
		if err == io.EOF {
			if !write {
				return nil
			}
			if held != nil {
				if err := c.produce(held); err != nil {
					return ignoreEnded(err)
				}
			}
			if c.r.reader != nil {
				return ignoreEnded(c.produce(nil))
			}
			return nil
		}
		if err != nil {
			return err
		}
		if !write {
			continue
		}
		if f.Bytes == nil {
			// An empty message is a record with an empty, not a null, value.
			f.Bytes = []byte{}
		}
		if held != nil {
			if err := c.produce(held); err != nil {
				return ignoreEnded(err)
			}
			held = nil
		}
		if hold {
			held = f.Bytes
			continue
		}
		if err := c.produce(f.Bytes); err != nil {
			return ignoreEnded(err)
		}
	}
}

// receiveUnary reads, in the handler's own goroutine, the request of a
// method whose request is not a stream: one message and the half-close,
// which a gRPC client sends together. If the client sends a second message
// instead (a stream to a unary method), it returns that message, and the
// rest of the stream is left to receive in a goroutine of its own.
func (c *call) receiveUnary(write bool) (more []byte, err error) {
	var first frame.Frame
	switch err := c.ss.RecvMsg(&first); {
	case err == io.EOF:
		return nil, c.receive(write, nil) // reads EOF again and ends the stream
	case err != nil:
		return nil, err
	}
	if first.Bytes == nil {
		first.Bytes = []byte{}
	}
	var next frame.Frame
	switch err := c.ss.RecvMsg(&next); {
	case err == io.EOF:
		if !write {
			return nil, nil
		}
		if err := c.produce(first.Bytes); err != nil {
			return nil, ignoreEnded(err)
		}
		if c.r.reader != nil {
			return nil, ignoreEnded(c.produce(nil))
		}
		return nil, nil
	case err != nil:
		return nil, err
	}
	if write {
		if err := c.produce(first.Bytes); err != nil {
			return nil, ignoreEnded(err)
		}
	}
	if next.Bytes == nil {
		next.Bytes = []byte{}
	}
	return next.Bytes, nil
}

// ignoreEnded treats writing after the call ended as the normal end of
// reading: the call already has its answer.
func ignoreEnded(err error) error {
	if err == errEnded {
		return nil
	}
	return err
}

// readRequests starts reading the request stream. A unary request is read
// at once in the calling goroutine, sparing every unary call a goroutine and
// a hand-off; a streaming request is read by a goroutine the handler owns,
// while the call streams replies. The returned channel yields the outcome
// of a reading goroutine; it is nil when the request was read in full.
func (c *call) readRequests(write bool) (<-chan error, error) {
	if c.m.ClientStreaming {
		return c.startReceive(write, nil), nil
	}
	more, err := c.receiveUnary(write)
	if err != nil || more == nil {
		return nil, err
	}
	return c.startReceive(write, more), nil
}

// startReceive runs receive in a goroutine owned by the handler.
func (c *call) startReceive(write bool, held []byte) <-chan error {
	done := make(chan error, 1)
	c.h.goCall(func() { done <- c.receive(write, held) })
	return done
}

// sent counts a response message of n bytes sent to the caller, the
// call's first when first.
func (c *call) sent(first bool, n int) {
	mt := &c.r.meter
	if mt.Responses != nil {
		mt.Responses.Inc()
	}
	if c.respBytes != nil {
		c.respBytes.Add(float64(n))
	}
	if first && mt.FirstReply != nil {
		mt.FirstReply.Observe(time.Since(c.start).Seconds())
	}
}

// serveOneWay writes the request records and answers one empty message once
// the client half-closed and, unless the route says otherwise, Kafka
// acknowledged every record.
func (c *call) serveOneWay() error {
	ctx := c.ss.Context()
	recvDone, err := c.readRequests(true)
	if err == nil && recvDone != nil {
		err = <-recvDone
	}
	if err != nil {
		c.stop()
		return recvStatus(err)
	}
	c.stop()
	if *c.r.cfg.OneWayAck {
		acked := make(chan struct{})
		// The waiter ends once every record is acknowledged or failed,
		// which the producer's delivery timeout bounds.
		c.h.goCall(func() {
			c.acks.Wait()
			close(acked)
		})
		select {
		case <-acked:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		select {
		case <-c.failed:
			return produceStatus(c.r.cfg.Topic, c.err)
		default:
		}
	}
	if err := c.ss.SendMsg(&frame.Frame{}); err != nil {
		return err
	}
	c.sent(false, 0) // a one-way route's answer is no reply, and empty
	return nil
}

// serveRequestReply writes the request records and streams the replies
// found on the reply topic for the call's correlation id.
func (c *call) serveRequestReply() (err error) {
	ctx := c.ss.Context()
	rd := c.r.reader
	if c.idempotent {
		// A retried call must see the replies written before this instance
		// started, so wait until the reader has read them.
		select {
		case <-rd.CaughtUp():
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	// Subscribe before producing, so no reply can slip past. Kept replies
	// that stopped coming for longer than the route's timeout belong to a
	// call that ended without an answer: they are not replayed.
	w, found := rd.Subscribe(c.corrID, c.idempotent, c.r.replyLimit, c.r.timeout())
	defer w.Close()
	if _, wait := tracing.Start(ctx, "wait for replies", trace.SpanKindInternal,
		attribute.String("messaging.destination.name", c.r.cfg.ReplyTo),
		attribute.Bool("ferry.replayed", found)); wait != nil {
		defer func() {
			st := status.Convert(err)
			tracing.Fail(wait, st.Code(), st.Message())
			wait.End()
		}()
	}
	// A call retried with the same idempotency-key is answered from the
	// replies already read (or still arriving) instead of being written to
	// the request topic a second time.
	recvDone, err := c.readRequests(!found)
	if err != nil {
		c.abandon()
		return recvStatus(err)
	}

	// The route's timeout bounds the time without progress — no reply read
	// and no request message written — not the whole call: a stream whose
	// replies keep flowing runs as long as they do. The timer is not reset
	// on every message; when it fires, the call ends only if nothing moved
	// for a whole timeout, else it waits out the rest.
	var (
		idle    *time.Timer
		timeout <-chan time.Time
	)
	d := c.r.timeout()
	if d > 0 {
		c.touch()
		idle = time.NewTimer(d)
		defer idle.Stop()
		timeout = idle.C
	}
	var (
		batch     []*Reply
		sent      int
		dropped   int
		gotHeader bool
	)
	for {
		select {
		case <-ctx.Done():
			c.abandon()
			return status.FromContextError(ctx.Err()).Err()
		case <-timeout:
			if rest := d - time.Since(c.lastProgress()); rest > 0 {
				idle.Reset(rest)
				continue
			}
			c.abandon()
			return c.timeoutStatus(d, gotHeader)
		case err := <-recvDone:
			recvDone = nil
			if err != nil {
				c.abandon()
				return recvStatus(err)
			}
		case <-c.failed:
			c.abandon()
			return produceStatus(c.r.cfg.Topic, c.err)
		case <-w.Notify():
			var overflow bool
			batch, overflow = w.Take(batch)
			if d > 0 {
				c.touch()
			}
			for _, rep := range batch {
				if !gotHeader {
					gotHeader = true
					if len(rep.Meta) > 0 {
						if err := c.ss.SendHeader(rep.Meta); err != nil {
							c.abandon()
							return err
						}
					}
				}
				if rep.End {
					// The answer can come before the client ended its
					// request stream: end it on Kafka too, so the back end
					// knows no more records of this call will come.
					c.abandon()
					if dropped > 0 {
						c.h.logger.Warn("dropped extra replies for a method with one response message",
							"route", c.r.Name, "method", c.m.Path, "correlation_id", c.corrID, "dropped", dropped)
					}
					if rep.Code == codes.OK && sent == 0 && !c.m.ServerStreaming {
						return status.Errorf(codes.Internal, "backend ended the call without a response message, which %s requires", c.m.Path)
					}
					return status.Error(rep.Code, rep.Message)
				}
				if !c.m.ServerStreaming && sent > 0 {
					dropped++
					continue
				}
				msg, err := c.response(rep, sent+1)
				if err != nil {
					c.abandon()
					return err
				}
				if err := c.ss.SendMsg(&frame.Frame{Bytes: msg}); err != nil {
					c.abandon()
					return err
				}
				c.sent(sent == 0, len(msg))
				sent++
			}
			if overflow {
				c.abandon()
				return status.Errorf(codes.ResourceExhausted, "more than %d replies queued for this call: the client reads too slowly", c.r.replyLimit)
			}
		}
	}
}

// response returns the response message of rep, the call's reply n
// (counted from 1): its value, or, on a route whose format is json, the
// value parsed as the method's output type. A reply that does not parse
// ends the call with INTERNAL: the back end wrote something the caller
// cannot be given, and skipping it would lose a response silently.
func (c *call) response(rep *Reply, n int) ([]byte, error) {
	if c.r.format == nil {
		return rep.Value, nil
	}
	out := c.m.Desc.Output()
	b, err := c.r.format.FromJSON(out, rep.Value)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reply %d on topic %q is not the JSON of a %s: %v", n, c.r.cfg.ReplyTo, out.FullName(), err)
	}
	return b, nil
}

// timeoutStatus is the status a call ends with when nothing moved for the
// route's timeout d; replied tells whether any reply record came.
func (c *call) timeoutStatus(d time.Duration, replied bool) error {
	if replied {
		return status.Errorf(codes.DeadlineExceeded, "no reply on topic %q for %s (route %s timeout)", c.r.cfg.ReplyTo, d, c.r.Name)
	}
	// No record at all: a back end that fails without answering looks
	// like this, and waiting longer would not change it.
	return status.Errorf(codes.DeadlineExceeded,
		"no reply on topic %q for %s (route %s timeout): no reply record came within the route's timeout. "+
			"A back end that fails without answering looks like this (Zilla's kafka-grpc does when its server answers an error); "+
			"for routes served by such back ends, lower routes[].produce.timeout",
		c.r.cfg.ReplyTo, d, c.r.Name)
}

// recvStatus is the status a call ends with when reading its request
// stream failed: grpc-go's own status (a malformed frame, a message over the
// size limit, a cancelled stream) when it has one.
func recvStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Internal, "reading request: %v", err)
}

// produceStatus is the status a call ends with when Kafka did not take one
// of its records.
func produceStatus(topic string, err error) error {
	return kafka.Wrap(fmt.Sprintf("producing to topic %q", topic), err)
}
