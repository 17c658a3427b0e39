// Regression tests for bugs found in review.

package kafkaapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// memberOf returns the service's only member.
func memberOf(s *Service) *member {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.members {
		return m
	}
	return nil
}

// TestEngineNoStallAfterLateAcks: the poll loop waits on a partition full
// of redeliveries that late acks then settle; the settles must wake it.
func TestEngineNoStallAfterLateAcks(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxUnackedPerPartition = 10
	cfg.Consume.MaxBufferedPerPartition = 5
	cfg.Consume.AckTimeout = 300 * time.Millisecond
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 2, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 10, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := take(t, ss, 10, 20*time.Second)
	time.Sleep(time.Second) // expire: requeued as redeliveries
	// Any event that makes the loop re-check while p0 is full: a reset of p1.
	if _, err := s.SetOffsets(context.Background(), "", group, topic, []OffsetTarget{{Partition: 1, Offset: 0}}); err != nil {
		t.Fatal(err)
	}
	m := memberOf(s)
	m.mu.Lock()
	t.Logf("pollWaits=%v p0 queue=%d", m.pollWaits, len(m.parts[0].queue))
	m.mu.Unlock()
	for _, msg := range msgs { // late acks settle the queued redeliveries
		if err := ss.Ack(msg.Partition, msg.Offset); err != nil {
			t.Fatal(err)
		}
	}
	produceN(t, s, topic, 3, 0)
	produceN(t, s, topic, 3, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := ss.Next(ctx); err != nil {
		m.mu.Lock()
		t.Errorf("stalled: %v; pollWaits=%v q0=%d q1=%d next0=%d", err, m.pollWaits, len(m.parts[0].queue), len(m.parts[1].queue), m.parts[0].next)
		m.mu.Unlock()
	}
	ss.Close(true)
}

// TestEngineStaleAckAfterReread: an ack from before a reset, once the
// partition was read again, is FAILED_PRECONDITION (skipped by streams and
// polls), not INVALID_ARGUMENT.
func TestEngineStaleAckAfterReread(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 10, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	take(t, ss, 10, 20*time.Second)
	if _, err := s.SetOffsets(context.Background(), "", group, topic, []OffsetTarget{{Partition: 0, Offset: 2}}); err != nil {
		t.Fatal(err)
	}
	m := memberOf(s)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.parts[0].queue)
		m.mu.Unlock()
		if n == 8 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = ss.Ack(0, 8)
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stale ack of 8 after re-read: %v", err)
	}
	ss.Close(true)
}

// TestEngineAckedDeadLetterNotRequeued: a message acknowledged while its
// dead-letter write is in flight is not queued again when the write fails.
func TestEngineAckedDeadLetterNotRequeued(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.AckTimeout = time.Hour
	cfg.Consume.MaxDeliveries = 1
	cfg.Consume.DeadLetterTopic = "dlq"
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 1, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	first := take(t, ss, 1, 20*time.Second)[0]
	m := memberOf(s)
	m.mu.Lock()
	ps := m.parts[0]
	m.endOfferLocked(ps, ps.offers[first.Offset], "test")
	d := m.dead[0]
	m.dead = nil
	m.mu.Unlock()
	if err := ss.Ack(0, first.Offset); err != nil { // ack lands while the write is in flight
		t.Fatal(err)
	}
	m.deadWritten(d, errors.New("broker said no"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if again, err := ss.Next(ctx); err == nil {
		t.Errorf("acked offset %d delivered again (deliveries %d)", again.Offset, again.Deliveries)
		if err := ss.Ack(0, again.Offset); err != nil {
			t.Log(err)
		}
		m.mu.Lock()
		t.Errorf("after ack: offers=%d (the offer of a settled offset cannot be acked away)", len(ps.offers))
		m.mu.Unlock()
	}
	ss.Close(true)
}

// TestEngineEndedOffersReleaseRecords: offers are allocated in blocks, so
// an offer that ended must let go of its record, or a block kept alive by
// one outstanding offer would keep the records of all the others.
func TestEngineEndedOffersReleaseRecords(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 4, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close(true)
	msgs := take(t, ss, 4, 20*time.Second)
	m := memberOf(s)
	m.mu.Lock()
	offers := map[int64]*offer{}
	for off, o := range m.parts[0].offers {
		offers[off] = o
	}
	m.mu.Unlock()
	if len(offers) != 4 {
		t.Fatalf("%d offers, want 4", len(offers))
	}
	if err := ss.Ack(0, msgs[0].Offset); err != nil {
		t.Fatal(err)
	}
	if failed := ss.AckAll(context.Background(), []Ref{{0, msgs[1].Offset}}); len(failed) > 0 {
		t.Fatal(failed[0].Err)
	}
	if err := ss.Nack(0, msgs[2].Offset); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, msg := range msgs {
		o := offers[msg.Offset]
		if ended := i < 3; ended != (o.rec == nil) {
			t.Errorf("offer of offset %d (ended: %v) holds record %v", msg.Offset, ended, o.rec)
		}
	}
}
