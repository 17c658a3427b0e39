package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/tracing"
)

var streamDesc = &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}

// call is one gRPC call made from request records of one correlation id.
type call struct {
	b       *Backend
	part    *partition
	id      string
	path    string
	replyTo string
	md      metadata.MD

	ctx    context.Context // ends at the deadline or when abandoned
	cancel context.CancelFunc

	mu        sync.Mutex
	offsets   []int64  // the call's records, finished together at its end
	msgs      [][]byte // request messages, kept for retries
	requestID string   // the caller's x-request-id, if any
	closed    bool     // the call takes no more records
	gotEnd    bool     // the null record arrived (or the call ended): counted once
	abandoned bool
	notify    chan struct{}
	// converted counts the request messages, from the first, that msgs
	// holds converted from JSON; refused is why the call's request could
	// not be converted (a status), answered in place of the server's.
	converted int
	refused   error

	// in and out are the method's types, for a back end whose format is
	// json (see format.go); nil otherwise.
	in, out protoreflect.MessageDescriptor

	// replyErr is the first failure to write a response record, set by
	// the producer's callback.
	replyErr atomic.Pointer[error]

	// span is the call's consumer span and trace its trace context, which
	// reply records carry; nil and empty unless the back end traces.
	span  trace.Span
	trace layout.Trace
}

func newCall(b *Backend, p *partition, r *kgo.Record, req layout.Request) *call {
	c := &call{
		b:       b,
		part:    p,
		id:      req.CorrelationID,
		path:    req.Path(),
		replyTo: req.ReplyTo,
		md:      b.layout.ServerMetadata(r.Headers, req.CorrelationID),
		notify:  make(chan struct{}, 1),
	}
	// The back end's static metadata replaces the request's entries of
	// the same keys. Validation keeps it off the keys Ferry sets above.
	for k, v := range b.metadata {
		c.md[k] = []string{v}
	}
	// The caller's request id came along as a meta: header. A call
	// without one gets its own from the edge, when Ferry gives calls ids.
	if ids := c.md.Get(edge.RequestIDKey); len(ids) > 0 {
		c.requestID = ids[0]
	}
	c.types()
	c.ctx, c.cancel = context.WithTimeout(b.ctx, b.cfg.Deadline)
	if b.tracer != nil {
		c.ctx, c.span = tracing.StartConsumer(c.ctx, b.tracer, b.layout.RequestTrace(r.Headers), "consume "+b.cfg.Topic,
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", b.cfg.Topic),
			attribute.String("rpc.method", c.path),
			attribute.String("ferry.correlation_id", c.id))
		c.trace = tracing.Of(c.ctx)
	}
	c.add(r)
	return c
}

// add appends a record of the call. It returns false when the call takes
// no more records (its request stream ended or it was abandoned); the
// caller then finishes the record itself.
func (c *call) add(r *kgo.Record) bool {
	c.mu.Lock()
	if c.closed || c.abandoned {
		c.mu.Unlock()
		return false
	}
	c.offsets = append(c.offsets, r.Offset)
	ended := false
	if r.Value == nil {
		c.closed = true
		ended = !c.gotEnd
		c.gotEnd = true
	} else {
		c.msgs = append(c.msgs, r.Value)
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
	c.mu.Unlock()
	if ended {
		// Outside c.mu: the back end's lock is never taken inside a call's.
		c.b.requestEnded()
	}
	return true
}

// abandon stops the call without a reply: its partition was taken away and
// the next owner redoes it.
func (c *call) abandon() {
	c.mu.Lock()
	c.abandoned = true
	c.mu.Unlock()
	c.cancel()
}

func (c *call) isAbandoned() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.abandoned
}

// run waits for a slot, makes the call with retries, writes its final reply
// and finishes its records once Kafka acknowledged that reply.
func (c *call) run() {
	defer c.b.ended(c)
	defer c.cancel()
	if c.span != nil {
		defer c.span.End()
	}
	select {
	case c.b.slots <- struct{}{}:
		c.b.leftQueue()
		defer func() { <-c.b.slots }()
	case <-c.ctx.Done():
		c.b.leftQueue()
		if !c.isAbandoned() {
			c.finish(layout.ResponseMetadata{}, codes.DeadlineExceeded, "no free call slot before the deadline ("+c.b.cfg.Deadline.String()+")")
		}
		return
	}
	hdrs, code, msg := c.attempts()
	if c.isAbandoned() {
		return
	}
	tracing.Fail(c.span, code, msg)
	c.finish(hdrs, code, msg)
}

// attempts makes the call, retrying while the server is UNAVAILABLE and
// no response was written, with exponential backoff and full jitter, until
// retry.max_attempts attempts were made or retry.max_elapsed has passed
// since the first began (or the deadline came). No attempt starts past
// max_elapsed.
func (c *call) attempts() (layout.ResponseMetadata, codes.Code, string) {
	cfg := c.b.cfg.Retry
	start := time.Now()
	end := start.Add(cfg.MaxElapsed)
	var last *status.Status
	var lastHdrs layout.ResponseMetadata
	for attempt := 1; ; attempt++ {
		hdrs, wrote, st, cut := c.attempt(end)
		if cut && last != nil {
			// This attempt never reached the server: the budget or the
			// deadline ended while it waited for a connection, perhaps
			// only for the stream to open. The last attempt that did
			// reach it tells what went wrong.
			attempt--
			hdrs, st = lastHdrs, last
		}
		last, lastHdrs = st, hdrs
		retry := st.Code() == codes.Unavailable && !wrote && attempt < cfg.MaxAttempts && c.ctx.Err() == nil
		var wait time.Duration
		if retry {
			ceil := cfg.InitialBackoff << (attempt - 1)
			if ceil > cfg.MaxBackoff || ceil <= 0 {
				ceil = cfg.MaxBackoff
			}
			wait = time.Duration(rand.Int64N(int64(ceil) + 1))
			deadline, _ := c.ctx.Deadline()
			retry = time.Until(end) > wait && time.Until(deadline) > wait
		}
		if !retry {
			switch {
			case st.Code() == codes.Unavailable && !wrote && c.ctx.Err() != context.Canceled:
				// The retry budget is spent: say how, so that the caller
				// can tell a server that stayed down from one that failed
				// once.
				return hdrs, st.Code(), fmt.Sprintf("%s (after %s in %s)", st.Message(), plural(attempt, "attempt"), time.Since(start).Round(time.Millisecond))
			case c.ctx.Err() == context.DeadlineExceeded && (st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded):
				return hdrs, codes.DeadlineExceeded, fmt.Sprintf("call deadline (%s) exceeded after %s", c.b.cfg.Deadline, plural(attempt, "attempt"))
			}
			return hdrs, st.Code(), st.Message()
		}
		c.b.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// attempt makes the call once: it sends the request messages (the ones
// already read, then each as it arrives), writes every response message as
// a reply record, and returns the response metadata, whether any response
// was written, and the final status. It waits for a connection to the server
// until the retry budget ends at end: a server that is down or restarting
// is waited for, where failing at once would spend the attempts in a
// moment. Once the call is under way, only its deadline bounds it. cut
// reports that the budget or the deadline ended before the stream opened.
func (c *call) attempt(end time.Time) (hdrs layout.ResponseMetadata, wrote bool, st *status.Status, cut bool) {
	if err := c.convertRead(); err != nil {
		return layout.ResponseMetadata{}, false, status.Convert(err), false
	}
	ctx, cancel := context.WithCancel(edge.WithRequestID(metadata.NewOutgoingContext(c.ctx, c.md), c.requestID))
	defer cancel()
	budget := time.AfterFunc(time.Until(end), cancel)
	s, err := c.b.conn.NewStream(ctx, streamDesc, c.path, grpc.WaitForReady(true))
	if !budget.Stop() {
		// The budget ended while waiting for a connection; a stream opened
		// just then is cancelled already.
		msg := "no connection to the server within retry.max_elapsed (" + c.b.cfg.Retry.MaxElapsed.String() + ")"
		if err != nil {
			msg += ": " + status.Convert(err).Message()
		}
		return layout.ResponseMetadata{}, false, status.New(codes.Unavailable, c.b.withTLSCause(msg)), true
	}
	if err != nil {
		st := status.Convert(err)
		if c.ctx.Err() == context.DeadlineExceeded {
			// The deadline came while waiting for a connection: the
			// server never saw the call.
			return layout.ResponseMetadata{}, false, status.New(codes.Unavailable, c.b.withTLSCause("no connection to the server before the call deadline ("+c.b.cfg.Deadline.String()+"): "+st.Message())), true
		}
		return layout.ResponseMetadata{}, false, st, false
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.send(ctx, cancel, s)
	}()
	// The sender ends once the attempt's context is cancelled.
	defer wg.Wait()
	defer cancel()

	gotHeader := false
	n := 0 // response messages read
	for {
		var f frame.Frame
		err := s.RecvMsg(&f)
		if !gotHeader {
			gotHeader = true
			if h, herr := s.Header(); herr == nil {
				hdrs.Header = c.b.layout.MetadataHeaders(h)
			}
		}
		if errors.Is(err, io.EOF) {
			hdrs.Trailer = c.b.layout.MetadataHeaders(s.Trailer())
			return hdrs, wrote, status.New(codes.OK, ""), false
		}
		if err != nil {
			hdrs.Trailer = c.b.layout.MetadataHeaders(s.Trailer())
			if refused := c.refusal(); refused != nil {
				// The sender cancelled the stream: a request message
				// did not convert.
				return hdrs, wrote, status.Convert(refused), false
			}
			return hdrs, wrote, status.Convert(err), false
		}
		if c.replyTo == "" {
			continue
		}
		n++
		value, err := c.reply(f.Bytes, n)
		if err != nil {
			return hdrs, wrote, status.Convert(err), false
		}
		wrote, hdrs.HeaderWritten = true, true
		rec := c.b.layout.ReplyRecord(c.replyTo, c.id, hdrs, value)
		rec.Headers = layout.AppendReplyTrace(rec.Headers, c.trace)
		c.b.prod.Produce(c.b.ctx, rec, c.replyWritten)
	}
}

func (c *call) replyWritten(_ *kgo.Record, err error) {
	if err != nil {
		c.replyErr.CompareAndSwap(nil, &err)
		c.b.logger.Error("writing a reply record", "correlation_id", c.id, "topic", c.replyTo, "err", err)
	}
}

// send writes the request messages to the stream and half-closes it once
// the request stream's null record arrived. A message that does not
// convert (see message) cancels the stream.
func (c *call) send(ctx context.Context, cancel context.CancelFunc, s grpc.ClientStream) {
	next := 0
	for {
		c.mu.Lock()
		var msg frame.Frame
		have := next < len(c.msgs)
		if have {
			msg.Bytes = c.msgs[next]
		}
		closed := c.closed
		c.mu.Unlock()
		switch {
		case have:
			if c.b.format != nil {
				b, err := c.message(next)
				if err != nil {
					cancel()
					return
				}
				msg.Bytes = b
			}
			next++
			if err := s.SendMsg(&msg); err != nil {
				return // RecvMsg reports the status
			}
			continue
		case closed:
			_ = s.CloseSend()
			return
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return
		}
	}
}

// finish writes the call's final reply record and, once Kafka acknowledged
// it, finishes the call's request records so they can be committed.
func (c *call) finish(hdrs layout.ResponseMetadata, code codes.Code, msg string) {
	c.mu.Lock()
	offsets := append([]int64(nil), c.offsets...)
	// Records of this id read from now until the call is gone are
	// finished at once: late records of its stream, or a retry's, which
	// the reply written here answers.
	c.closed = true
	c.mu.Unlock()
	if c.replyTo == "" {
		c.part.finish(offsets...)
		return
	}
	if errp := c.replyErr.Load(); errp != nil {
		// A response record is known to be lost, perhaps every one that
		// carried the response headers: the final record carries them.
		hdrs.HeaderWritten = false
		if code == codes.OK {
			// The caller must not see a complete answer. UNAVAILABLE is
			// not replayed to a retry, which executes the call again.
			code, msg = codes.Unavailable, "writing a response record to Kafka failed: "+(*errp).Error()
		}
	}
	rec := c.b.layout.FinalRecord(c.replyTo, c.id, hdrs, code, msg)
	rec.Headers = layout.AppendReplyTrace(rec.Headers, c.trace)
	// Until Kafka acknowledged the reply, it counts as an active call of
	// the partition, so that a revoke's drain waits for it and commits the
	// call's requests rather than leaving them to be redone.
	counted := c.part.addActive(1)
	c.b.calls.Add(1) // the writes below, until the last callback
	c.writeFinal(rec, offsets, counted, 0)
}

// writeFinal writes a call's final reply record and, once Kafka took it,
// finishes the call's request records. A request is committed only when
// its final reply is known to be on Kafka: when the producer gives up (an
// outage longer than its delivery timeout), the record is written again
// after a pause, for as long as the partition is this instance's and the
// back end runs; the partition's commits wait meanwhile. Once the partition
// is gone the request stays uncommitted, and its next owner executes it
// again. (Finishing it anyway lost the answer of every call whose final
// reply fell into a broker outage.)
func (c *call) writeFinal(rec *kgo.Record, offsets []int64, counted bool, tries int) {
	c.b.prod.Produce(c.b.ctx, rec, func(_ *kgo.Record, err error) {
		switch {
		case err == nil:
			c.part.finish(offsets...)
		case c.b.ctx.Err() == nil && !c.part.isRetired():
			c.b.logger.Warn("writing the final reply record; trying again", "correlation_id", c.id, "topic", c.replyTo, "err", err)
			go func() {
				t := time.NewTimer(min(time.Second<<min(tries, 5), 30*time.Second))
				select {
				case <-t.C:
					c.writeFinal(rec, offsets, counted, tries+1)
				case <-c.b.ctx.Done():
					t.Stop()
					c.finalNotWritten(counted, err)
				}
			}()
			return
		default:
			c.finalNotWritten(counted, err)
			return
		}
		if counted {
			c.part.addActive(-1)
		}
		c.b.calls.Done()
	})
}

// finalNotWritten gives up writing a call's final reply: the partition is
// gone or the back end closes, so its request stays uncommitted.
func (c *call) finalNotWritten(counted bool, err error) {
	c.b.logger.Warn("final reply not written; the request stays uncommitted and is executed again by the partition's next owner",
		"correlation_id", c.id, "topic", c.replyTo, "err", err)
	if counted {
		c.part.addActive(-1)
	}
	c.b.calls.Done()
}
