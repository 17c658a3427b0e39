package kafkaapi

import (
	"context"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
)

// offerBlock is how many offers newOfferLocked allocates at once.
const offerBlock = 256

// newOfferLocked returns a new offer. Offers are allocated in blocks: one
// allocation per block rather than per delivered record. An offer is never
// reused; a block is freed once none of its offers is referenced.
func (m *member) newOfferLocked() *offer {
	if len(m.offers) == 0 {
		m.offers = make([]offer, offerBlock)
	}
	o := &m.offers[0]
	m.offers = m.offers[1:]
	return o
}

// next waits until a message can be delivered on ss, as an offer, or ctx
// ends.
func (m *member) next(ctx context.Context, ss *Session) (*Message, error) {
	m.mu.Lock()
	if m.waiting >= m.cfg.maxWaiting {
		m.mu.Unlock()
		return nil, errorf(codes.ResourceExhausted, "too many requests waiting for topic %q in group %q (at most %d)", m.key.topic, m.key.group, m.cfg.maxWaiting)
	}
	m.waiting++
	defer func() {
		m.waiting--
		m.used = true
		m.mu.Unlock()
	}()
	for {
		switch {
		case ss.closed:
			return nil, errorf(codes.FailedPrecondition, "the session is closed")
		case m.closing:
			return nil, closing("Ferry is leaving the consumer group")
		case m.fatal != nil:
			return nil, m.fatal
		}
		if msg, ok := m.takeLocked(ss, time.Now(), math.MaxInt); ok {
			return &msg, nil
		}
		wake := m.wake
		m.mu.Unlock()
		select {
		case <-wake:
			m.mu.Lock()
		case <-ctx.Done():
			m.mu.Lock()
			return nil, contextError(ctx.Err())
		}
	}
}

// takeLocked delivers the next deliverable record, round-robin over the
// partitions, as an offer owned by ss; none when that record's Size is
// above budget.
func (m *member) takeLocked(ss *Session, now time.Time, budget int) (Message, bool) {
	n := len(m.order)
	for i := 0; i < n; i++ {
		ps := m.parts[m.order[(m.rr+i)%n]]
		if !ps.deliverable(m.cfg.maxUnacked) {
			continue
		}
		if budget < math.MaxInt && recordSize(ps.queue[0]) > budget {
			return Message{}, false
		}
		m.rr = (m.rr + i + 1) % n
		o := m.newOfferLocked()
		ps.take(o, ss, now.Add(m.cfg.ackTimeout))
		m.counts.deliveries.Add(1)
		if o.deliveries > 1 {
			m.counts.redeliveries.Add(1)
		}
		m.drainedLocked(ps)
		return o.message(), true
	}
	return Message{}, false
}

// ack settles a delivered message, whoever it was delivered to. It
// returns the record when the message was on offer (nil when it was
// settled before, or redelivered meanwhile and acknowledged early).
func (m *member) ack(partition int32, offset int64) (*kgo.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ackLocked(partition, offset)
}

// ackLocked is ack with m.mu held.
func (m *member) ackLocked(partition int32, offset int64) (*kgo.Record, error) {
	m.used = true
	ps, err := m.partLocked(partition, offset)
	if err != nil || ps == nil {
		return nil, err
	}
	var rec *kgo.Record
	if o := ps.offers[offset]; o != nil {
		rec = o.rec
		ps.drop(o)
	}
	m.counts.acks.Add(1)
	m.settleLocked(ps, offset)
	return rec, nil
}

// nack ends the offer of a delivered message: it is delivered again, or
// moved to the dead-letter topic.
func (m *member) nack(partition int32, offset int64) error {
	defer m.flushDead()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.used = true
	ps, err := m.partLocked(partition, offset)
	if err != nil || ps == nil {
		return err
	}
	if o := ps.offers[offset]; o != nil {
		m.endOfferLocked(ps, o, "handed back")
		m.broadcastLocked()
	}
	return nil
}

// partLocked checks an acknowledged (partition, offset): it returns the
// partition's state when offset is unsettled, nil and no error when it is
// settled already.
func (m *member) partLocked(partition int32, offset int64) (*partState, error) {
	ps := m.parts[partition]
	if ps == nil {
		return nil, &NotOwnedError{Topic: m.key.topic, Group: m.key.group, Partition: partition}
	}
	if unsettled, err := ps.check(offset); err != nil || !unsettled {
		return nil, err
	}
	return ps, nil
}

// settleLocked marks offset acknowledged.
func (m *member) settleLocked(ps *partState, offset int64) {
	settled, dequeued := ps.settle(offset)
	if !settled {
		return
	}
	if dequeued {
		m.drainedLocked(ps) // acknowledged late, while queued for redelivery
	}
	if m.waiting > 0 && len(ps.offers) == m.cfg.maxUnacked-1 {
		m.broadcastLocked() // the partition may deliver again
	}
}

// endOfferLocked ends an offer that was not acknowledged: the record goes
// back to the queue, or, once delivered max_deliveries times, to the
// member's dead letters, which flushDead writes after the lock is released.
func (m *member) endOfferLocked(ps *partState, o *offer, why string) {
	rec, deliveries, dead := ps.end(o, m.cfg.maxDeliveries)
	if dead {
		m.dead = append(m.dead, deadLetter{ps: ps, gen: ps.gen, rec: rec, deliveries: deliveries})
		return
	}
	m.s.logger.Debug("message to be delivered again", "topic", m.key.topic, "group", m.key.group,
		"partition", ps.partition, "offset", rec.Offset, "deliveries", deliveries, "why", why)
}
