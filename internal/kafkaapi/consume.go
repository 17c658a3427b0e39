package kafkaapi

import (
	"context"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/tracing"
)

// Open joins group (on first use in this Ferry instance) to consume topic
// and returns a session to take messages from. An unknown topic is
// NOT_FOUND.
func (s *Service) Open(ctx context.Context, cluster, group, topic string) (*Session, error) {
	if err := checkTopicGroup(topic, group); err != nil {
		return nil, err
	}
	if err := s.allowConsume(ctx, group, topic); err != nil {
		return nil, err
	}
	if err := s.checkDeadLetterTopic(group, topic); err != nil {
		return nil, err
	}
	c, err := s.cluster(cluster)
	if err != nil {
		return nil, err
	}
	key := memberKey{c.Name(), group, topic}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, closing("Ferry is shutting down")
		}
		m := s.members[key]
		s.mu.Unlock()
		if m == nil {
			if m, err = s.join(ctx, c, key); err != nil {
				return nil, err
			}
		}
		if ss := m.open(); ss != nil {
			return ss, nil
		}
		// The member is leaving (idle); join anew.
		s.mu.Lock()
		if s.members[key] == m {
			delete(s.members, key)
		}
		s.mu.Unlock()
	}
}

// Ack acknowledges a delivered message without a session (Ack calls).
func (s *Service) Ack(ctx context.Context, cluster, group, topic string, partition int32, offset int64) error {
	if err := s.allowConsume(ctx, group, topic); err != nil {
		return err
	}
	m, err := s.local(cluster, group, topic)
	if err != nil {
		return err
	}
	rec, err := m.ack(partition, offset)
	if rec != nil {
		traceAcks(ctx, group, []*kgo.Record{rec})
	}
	return err
}

// local returns this instance's member for (cluster, group, topic), or
// FAILED_PRECONDITION when it has none.
func (s *Service) local(cluster, group, topic string) (*member, error) {
	if err := checkTopicGroup(topic, group); err != nil {
		return nil, err
	}
	c, err := s.cluster(cluster)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	m := s.members[memberKey{c.Name(), group, topic}]
	s.mu.Unlock()
	if m == nil {
		return nil, errorf(codes.FailedPrecondition,
			"this Ferry instance is not consuming topic %q in group %q (never, or it left the group after being idle); unacknowledged messages are delivered again", topic, group)
	}
	return m, nil
}

// Session is one client's use of a group member: a stream, or one poll.
type Session struct {
	m *member
	// outstanding counts the offers delivered on this session and not yet
	// settled (each offer points at its session); guarded by m.mu.
	outstanding int
	// fewer, when not nil, is closed when outstanding drops (by an ack
	// from anyone, a nack, an ack timeout, a rebalance) or the session
	// closes; guarded by m.mu.
	fewer  chan struct{}
	closed bool
}

// Next waits until a message can be delivered on the session, or ctx ends
// (then it returns ctx's error as a status). The message is an offer: it is
// delivered again after the ack timeout unless acknowledged.
func (ss *Session) Next(ctx context.Context) (*Message, error) {
	return ss.m.next(ctx, ss)
}

// TryNext returns a message if one can be delivered at once.
func (ss *Session) TryNext() (*Message, bool) {
	m := ss.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if ss.closed {
		return nil, false
	}
	if msg, ok := m.takeLocked(ss, time.Now(), math.MaxInt); ok {
		return &msg, true
	}
	return nil, false
}

// TakeUpTo appends to buf up to max messages that can be delivered at
// once and whose Size adds up to at most maxBytes — except that the first
// is taken whatever its size when buf is empty; none when nothing is
// deliverable. Messages are values, so a stream reusing buf allocates
// nothing per message.
func (ss *Session) TakeUpTo(buf []Message, max, maxBytes int) []Message {
	m := ss.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if ss.closed {
		return buf
	}
	for i := range buf {
		maxBytes -= buf[i].Size()
	}
	now := time.Now() // one deadline for the batch
	for range max {
		budget := maxBytes
		if len(buf) == 0 {
			budget = math.MaxInt
		}
		msg, ok := m.takeLocked(ss, now, budget)
		if !ok {
			break
		}
		maxBytes -= msg.Size()
		buf = append(buf, msg)
	}
	return buf
}

// WaitOutstandingBelow waits until fewer than n messages delivered on the
// session are outstanding, the session closes, or ctx ends (then it
// returns ctx's error as a status).
func (ss *Session) WaitOutstandingBelow(ctx context.Context, n int) error {
	m := ss.m
	m.mu.Lock()
	for ss.outstanding >= n && !ss.closed {
		if ss.fewer == nil {
			ss.fewer = make(chan struct{})
		}
		fewer := ss.fewer
		m.mu.Unlock()
		select {
		case <-fewer:
		case <-ctx.Done():
			return contextError(ctx.Err())
		}
		m.mu.Lock()
	}
	m.mu.Unlock()
	return nil
}

// fewerLocked wakes whoever waits in WaitOutstandingBelow.
func (ss *Session) fewerLocked() {
	if ss.fewer != nil {
		close(ss.fewer)
		ss.fewer = nil
	}
}

// Outstanding returns how many messages delivered on the session are not
// yet acknowledged (by anyone) nor handed back.
func (ss *Session) Outstanding() int {
	ss.m.mu.Lock()
	defer ss.m.mu.Unlock()
	return ss.outstanding
}

// Ack acknowledges a delivered message of the session's group and topic,
// whoever it was delivered to. Acknowledging twice is harmless. A partition
// this instance no longer owns is FAILED_PRECONDITION (the message is
// redelivered by its new owner); an offset never delivered is
// INVALID_ARGUMENT.
func (ss *Session) Ack(partition int32, offset int64) error {
	_, err := ss.m.ack(partition, offset)
	return err
}

// AckAll acknowledges refs as Ack does each, under one lock, and returns
// those that failed, in order. When the acknowledging call in ctx is
// traced, each message that carried a trace context gets an ack span.
func (ss *Session) AckAll(ctx context.Context, refs []Ref) []RefError {
	m := ss.m
	traced := tracing.Active(ctx)
	var recs []*kgo.Record
	var failed []RefError
	m.mu.Lock()
	for _, r := range refs {
		rec, err := m.ackLocked(r.Partition, r.Offset)
		if err != nil {
			failed = append(failed, RefError{Ref: r, Err: err})
		} else if traced && rec != nil {
			recs = append(recs, rec)
		}
	}
	m.mu.Unlock()
	traceAcks(ctx, m.key.group, recs)
	return failed
}

// Nack hands a delivered message back for redelivery now.
func (ss *Session) Nack(partition int32, offset int64) error {
	return ss.m.nack(partition, offset)
}

// Close ends the session. With release set, messages delivered on it and
// not acknowledged are redelivered at once (a stream that ended); without,
// they wait for their ack timeout (a poll whose client acks later).
func (ss *Session) Close(release bool) {
	m := ss.m
	defer m.flushDead()
	m.mu.Lock()
	defer m.mu.Unlock()
	if ss.closed {
		return
	}
	ss.closed = true
	m.sessions--
	m.used = true
	if ss.outstanding > 0 {
		for _, ps := range m.parts {
			for _, o := range ps.offers {
				if o.session != ss {
					continue
				}
				o.session = nil
				if release {
					m.endOfferLocked(ps, o, "released by a closed stream")
				}
			}
		}
	}
	ss.outstanding = 0
	ss.fewerLocked()
	m.broadcastLocked()
}
