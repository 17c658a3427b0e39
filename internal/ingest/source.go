package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
)

// State is where a source is.
type State string

// The states of a source.
const (
	// StateStandby: another Ferry instance runs the source, or none yet.
	StateStandby State = "standby"
	// StateResuming: reading the topic for where the source stopped.
	StateResuming State = "resuming"
	// StateConnecting: opening the call.
	StateConnecting State = "connecting"
	// StateRunning: the call is open and records flow.
	StateRunning State = "running"
	// StateBackingOff: waiting before opening the call again after it
	// failed.
	StateBackingOff State = "backing_off"
	// StateWaiting: the server ended the call with OK; waiting
	// reconnect.reopen_delay before opening it again.
	StateWaiting State = "waiting"
	// StateStopped: the source gave up (a permanent error, or
	// reconnect.max_attempts) and stays stopped until Ferry restarts.
	StateStopped State = "stopped"
)

// States are every state, in the order metrics list them.
var States = []State{StateStandby, StateResuming, StateConnecting, StateRunning, StateBackingOff, StateWaiting, StateStopped}

// Status is what a source did and where it is.
type Status struct {
	Name  string `json:"name"`
	Topic string `json:"topic"`
	State State  `json:"state"`
	// Reason says why the source is backing off or stopped.
	Reason string `json:"reason,omitempty"`
	// Since is when the source entered its state.
	Since time.Time `json:"since"`
	// Records counts the records Kafka acknowledged.
	Records uint64 `json:"records"`
	// Reconnects counts the calls opened again after one ended.
	Reconnects uint64 `json:"reconnects"`
	// Gaps counts the calls of a streaming source without a cursor opened
	// again after one failed: the new call starts from the configured
	// request, and what the server sent in between is not in the topic.
	Gaps uint64 `json:"gaps"`
	// Failed counts the records Kafka refused; a source with a cursor
	// reads them again, one without loses them (counted in Lost too).
	Failed uint64 `json:"failed"`
	// Lost counts records Kafka refused that a source without a cursor
	// cannot read again.
	Lost uint64 `json:"lost"`
	// Resumes counts the times the source found where it stopped in its
	// topic and opened the call from there.
	Resumes uint64 `json:"resumes"`
	// InFlight are the records read and not yet acknowledged.
	InFlight int `json:"in_flight"`
	// Cursor is the latest cursor every record up to which Kafka
	// acknowledged.
	Cursor string `json:"cursor,omitempty"`
}

// errIdle ends a call that delivered nothing for the idle timeout.
var errIdle = errors.New("no message within the idle timeout")

// source runs one configured source while this instance owns it.
type source struct {
	plan    *Plan
	cluster *kafka.Cluster
	conn    *grpc.ClientConn
	tlsLog  *backend.ConnLog
	md      metadata.MD
	logger  *slog.Logger
	// recordCtx is what records are produced with: it outlasts a call, so
	// records read are written even as the call ends.
	recordCtx context.Context

	records, reconnects, gaps, failed, lost, resumes atomic.Uint64

	mu     sync.Mutex
	state  State
	reason string
	since  time.Time
	win    *window
}

func (s *source) setState(st State, reason string) {
	s.mu.Lock()
	changed := s.state != st || s.reason != reason
	s.state, s.reason = st, reason
	if changed {
		s.since = time.Now()
	}
	s.mu.Unlock()
}

func (s *source) status() Status {
	s.mu.Lock()
	st := Status{Name: s.plan.cfg.Name, Topic: s.plan.cfg.Topic, State: s.state, Reason: s.reason, Since: s.since}
	win := s.win
	s.mu.Unlock()
	if win != nil {
		cur, _ := win.position()
		st.Cursor = string(cur)
		st.InFlight = len(win.slots)
	}
	st.Records, st.Reconnects, st.Gaps = s.records.Load(), s.reconnects.Load(), s.gaps.Load()
	st.Failed, st.Lost, st.Resumes = s.failed.Load(), s.lost.Load(), s.resumes.Load()
	return st
}

// run runs the source until ctx ends or the source stops for good. gen is
// the ingest group's generation in which this instance got the source.
func (s *source) run(ctx context.Context, gen int32) {
	cfg := s.plan.cfg
	var pos position
	if s.plan.cursor != nil {
		for attempt := 1; ; attempt++ {
			s.setState(StateResuming, "")
			var err error
			if pos, err = s.resume(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			wait := s.backoff(attempt)
			s.logger.Warn("cannot read where the source stopped from its topic; trying again", "topic", cfg.Topic, "retry_in", wait, "err", err)
			s.setState(StateBackingOff, "reading the topic: "+err.Error())
			if !sleep(ctx, wait) {
				return
			}
		}
		if pos.found {
			s.resumes.Add(1)
			s.logger.Info("resuming where the topic ends", "cursor", string(pos.cursor), "topic", cfg.Topic)
		}
	}
	attempt := 0
	for opened := false; ctx.Err() == nil; opened = true {
		if opened {
			s.reconnects.Add(1)
		}
		s.setState(StateConnecting, "")
		began := time.Now()
		res := s.call(ctx, gen, &pos)
		if ctx.Err() != nil {
			return
		}
		st := res.status
		switch {
		case res.convert != nil:
			s.stop(fmt.Sprintf("a response cannot become a record: %v", res.convert))
			return
		case errors.Is(res.refused, kerr.MessageTooLarge):
			// Read again, it would be refused again.
			s.stop(fmt.Sprintf("Kafka refused a record as too large (%v): raise the topic's max.message.bytes and clusters[].producer limits, or keep responses smaller", res.refused))
			return
		case res.refused != nil:
			if s.plan.cursor == nil {
				s.logger.Error("Kafka refused records of a source without a cursor: they are lost", "topic", cfg.Topic, "err", res.refused)
			} else {
				s.logger.Warn("Kafka refused a record; opening the call again from the last acknowledged cursor", "topic", cfg.Topic, "err", res.refused)
			}
			st = status.New(codes.Unavailable, "Kafka refused a record: "+res.refused.Error())
		case st.Code() == codes.OK:
			attempt = 0
			s.setState(StateWaiting, "")
			if !sleep(ctx, cfg.Reconnect.ReopenDelay) {
				return
			}
			continue
		case s.permanent(st.Code()):
			s.stop(fmt.Sprintf("the server answered %s: %s", st.Code(), s.tlsLog.WithCause(st.Message())))
			return
		}
		if s.plan.cursor == nil && s.plan.stream {
			// The call opens again from the configured request: what
			// the server sent meanwhile is not in the topic.
			s.gaps.Add(1)
		}
		if time.Since(began) >= cfg.Reconnect.ResetAfter {
			attempt = 0
		}
		attempt++
		if m := cfg.Reconnect.MaxAttempts; m > 0 && attempt >= m {
			s.stop(fmt.Sprintf("%d calls failed in a row (reconnect.max_attempts), the last with %s: %s", attempt, st.Code(), st.Message()))
			return
		}
		wait := s.backoff(attempt)
		reason := fmt.Sprintf("%s: %s", st.Code(), s.tlsLog.WithCause(st.Message()))
		s.logger.Warn("source call ended; opening it again", "code", st.Code().String(), "err", s.tlsLog.WithCause(st.Message()), "attempt", attempt, "retry_in", wait)
		s.setState(StateBackingOff, reason)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// stop stops the source for good.
func (s *source) stop(reason string) {
	s.logger.Error("source stopped: it stays stopped until Ferry restarts", "reason", reason)
	s.setState(StateStopped, reason)
}

func (s *source) permanent(c codes.Code) bool {
	for _, name := range s.plan.cfg.Reconnect.StopOn {
		if codeNames[name] == c {
			return true
		}
	}
	return false
}

// backoff is the wait before attempt: exponential with full jitter.
func (s *source) backoff(attempt int) time.Duration {
	r := s.plan.cfg.Reconnect
	d := r.MaxBackoff
	if attempt <= 30 {
		d = min(r.MaxBackoff, r.InitialBackoff<<(attempt-1))
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// callResult is how one call ended.
type callResult struct {
	// status is the call's status (OK when the server ended it so).
	status *status.Status
	// records counts the responses read.
	records int
	// refused is Kafka's error for a record it refused; convert the error
	// of a response that could not become a record.
	refused, convert error
}

// call opens the call from pos, writes every response to Kafka as it
// comes, and returns once the call ended and Kafka answered for every
// record; pos then holds the safe position.
func (s *source) call(ctx context.Context, gen int32, pos *position) callResult {
	cfg := s.plan.cfg
	req, err := s.plan.requestFor(pos.cursor)
	if err != nil {
		return callResult{status: status.New(codes.InvalidArgument, "the cursor cannot go into the request: "+err.Error())}
	}
	cctx, cancel := context.WithCancelCause(metadata.NewOutgoingContext(ctx, s.md))
	defer cancel(nil)
	// The idle timeout runs from the call's start, so a server that never
	// answers is cut off too.
	var idle *time.Timer
	if cfg.IdleTimeout > 0 {
		idle = time.AfterFunc(cfg.IdleTimeout, func() { cancel(errIdle) })
		defer idle.Stop()
	}
	cs, err := s.conn.NewStream(cctx, &grpc.StreamDesc{ServerStreams: true}, s.plan.path)
	if err != nil {
		return callResult{status: status.Convert(err)}
	}
	if err := cs.SendMsg(&frame.Frame{Bytes: req}); err != nil && !errors.Is(err, io.EOF) {
		return callResult{status: status.Convert(err)}
	}
	if err := cs.CloseSend(); err != nil {
		return callResult{status: status.Convert(err)}
	}
	var meta []kgo.RecordHeader
	if md, err := cs.Header(); err == nil && cfg.MetadataHeaders {
		meta = metaHeaders(md)
	}
	// Records stamped with a response's own time may be older than the
	// producer's delivery timeout, which franz-go counts from a record's
	// timestamp: they go through the producer that bounds delivery by
	// retries instead.
	producer := s.cluster.Producer
	if s.plan.stamp != nil {
		producer = s.cluster.BackdatedProducer
	}
	prod, err := producer(kafka.AcksInSyncReplicas)
	if err != nil {
		return callResult{status: status.New(codes.Unavailable, err.Error())}
	}
	win := newWindow(cfg.MaxInFlight, pos.cursor, pos.seq)
	s.mu.Lock()
	s.win = win
	s.mu.Unlock()
	s.setState(StateRunning, "")
	msg := dynamicpb.NewMessage(s.plan.out)
	var res callResult
	var recvErr error
	seq := pos.seq
	for {
		if err := win.acquire(cctx); err != nil {
			recvErr = err
			break
		}
		var f frame.Frame
		if err := cs.RecvMsg(&f); err != nil {
			win.unused()
			recvErr = err
			break
		}
		if idle != nil {
			idle.Reset(cfg.IdleTimeout)
		}
		res.records++
		rec, cursor, err := s.plan.record(f.Bytes, msg, meta)
		if err != nil {
			win.unused()
			res.convert = err
			break
		}
		seq++
		if s.plan.cursor != nil {
			safe, _ := win.position()
			rec.Headers = append(rec.Headers,
				kgo.RecordHeader{Key: HeaderCursor, Value: cursor},
				kgo.RecordHeader{Key: HeaderSeq, Value: seqText(gen, seq)},
				kgo.RecordHeader{Key: HeaderResume, Value: safe})
		}
		n := win.add(cursor, seq)
		prod.Produce(s.recordCtx, rec, func(_ *kgo.Record, err error) {
			if err == nil {
				s.records.Add(1)
			} else {
				s.failed.Add(1)
				if s.plan.cursor == nil {
					s.lost.Add(1)
				}
			}
			win.done(n, err)
		})
	}
	cancel(errors.New("the source's call ended"))
	pos.cursor, pos.seq, res.refused = win.wait()
	s.mu.Lock()
	s.win = nil
	s.mu.Unlock()
	switch {
	case res.refused != nil || res.convert != nil:
		res.status = status.New(codes.Unavailable, "ended by Ferry")
	case errors.Is(recvErr, io.EOF):
		res.status = status.New(codes.OK, "")
	case errors.Is(context.Cause(cctx), errIdle):
		res.status = status.New(codes.DeadlineExceeded, fmt.Sprintf("no message for %s (idle_timeout)", cfg.IdleTimeout))
	default:
		res.status = status.Convert(recvErr)
	}
	return res
}

// seqText is the ferry-seq header of record seq written in generation
// gen.
func seqText(gen int32, seq int64) []byte {
	b := strconv.AppendInt(nil, int64(gen), 10)
	b = append(b, '-')
	return strconv.AppendInt(b, seq, 10)
}

// metaHeaders turns response header metadata into meta:<key> headers,
// sorted by key, leaving out what gRPC itself sets.
func metaHeaders(md metadata.MD) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for _, k := range sortedKeys(md) {
		if k == "content-type" {
			continue
		}
		for _, v := range md[k] {
			out = append(out, kgo.RecordHeader{Key: metaPrefix + k, Value: []byte(v)})
		}
	}
	return out
}

// codeNames maps the names reconnect.stop_on takes to gRPC codes.
var codeNames = func() map[string]codes.Code {
	m := map[string]codes.Code{}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		m[upperSnake(c.String())] = c
	}
	return m
}()

// upperSnake turns grpc-go's code names (InvalidArgument) into the
// protocol's (INVALID_ARGUMENT).
func upperSnake(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			if i > 0 {
				b = append(b, '_')
			}
			b = append(b, c)
		} else {
			b = append(b, c-'a'+'A')
		}
	}
	return string(b)
}

// sortedKeys returns md's keys, sorted.
func sortedKeys(md metadata.MD) []string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
