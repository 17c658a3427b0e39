package kafkaapi

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/sparseacks"
)

// These tests drive a partition's state alone: no broker, no client, no
// group member.

// readN adds records from..to-1 of partition 0 to ps.
func readN(ps *partState, from, to int64) {
	for off := from; off < to; off++ {
		ps.add(&kgo.Record{Topic: ps.topic, Partition: ps.partition, Offset: off})
	}
}

// takeAll offers every queued record (up to maxUnacked 1000) and returns
// the offers, in the order taken.
func takeAll(ps *partState, ss *Session) []*offer {
	var out []*offer
	deadline := time.Now().Add(time.Minute)
	for ps.deliverable(1000) {
		o := new(offer)
		ps.take(o, ss, deadline)
		out = append(out, o)
	}
	return out
}

func offsetsOf(os []*offer) []int64 {
	var out []int64
	for _, o := range os {
		out = append(out, o.rec.Offset)
	}
	return out
}

// TestPartStateOrder: records are offered in offset order, and a record
// handed back is offered again before the ones after it.
func TestPartStateOrder(t *testing.T) {
	ps := newPartState("t", 0)
	readN(ps, 0, 5)
	ss := &Session{}
	first := takeAll(ps, ss)
	if got := offsetsOf(first); !slices.Equal(got, []int64{0, 1, 2, 3, 4}) {
		t.Fatalf("offered %v", got)
	}
	if ss.outstanding != 5 {
		t.Errorf("session outstanding %d, want 5", ss.outstanding)
	}
	ps.end(first[3], 0)
	ps.end(first[1], 0)
	readN(ps, 5, 7)
	if got := offsetsOf(takeAll(ps, ss)); !slices.Equal(got, []int64{1, 3, 5, 6}) {
		t.Errorf("after handing back 3 and 1: offered %v, want [1 3 5 6]", got)
	}
	if ss.outstanding != 7 {
		t.Errorf("session outstanding %d, want 7", ss.outstanding)
	}
}

// TestPartStateRedeliveryCount: each delivery of a record counts the
// earlier ones; an acknowledgement after the offer ended still settles it
// and takes it out of the queue.
func TestPartStateRedeliveryCount(t *testing.T) {
	ps := newPartState("t", 0)
	readN(ps, 0, 2) // offset 1 is offered once and held
	for want := 1; want <= 3; want++ {
		o := takeAll(ps, nil)[0]
		if o.rec.Offset != 0 || o.deliveries != want {
			t.Fatalf("delivery %d: offset %d counted %d", want, o.rec.Offset, o.deliveries)
		}
		if m := o.message(); m.Deliveries != want || m.Offset != 0 {
			t.Fatalf("message %+v", m)
		}
		if _, _, dead := ps.end(o, 0); dead {
			t.Fatal("dead without max_deliveries")
		}
	}
	if unsettled, err := ps.check(0); err != nil || !unsettled {
		t.Fatalf("check of a queued redelivery: %v, %v", unsettled, err)
	}
	settled, dequeued := ps.settle(0)
	if !settled || !dequeued {
		t.Errorf("late ack: settled %v, dequeued %v; want both", settled, dequeued)
	}
	if len(ps.queue) != 0 || len(ps.redeliver) != 0 {
		t.Errorf("after a late ack: queue %d, redeliver %v", len(ps.queue), ps.redeliver)
	}
	if settled, _ := ps.settle(0); settled {
		t.Error("settled twice")
	}
}

// TestPartStateDeadLetter: the offer of a record's max_deliveries-th
// delivery goes to the dead-letter topic instead of the queue; the write's
// end settles it unless it was acknowledged meanwhile.
func TestPartStateDeadLetter(t *testing.T) {
	ps := newPartState("t", 0)
	readN(ps, 0, 2)
	o := takeAll(ps, nil)
	if _, _, dead := ps.end(o[0], 2); dead {
		t.Fatal("dead after 1 delivery of 2")
	}
	again := takeAll(ps, nil)[0]
	rec, deliveries, dead := ps.end(again, 2)
	if !dead || rec.Offset != 0 || deliveries != 2 {
		t.Fatalf("second end: offset %d, deliveries %d, dead %v; want 0, 2, true", rec.Offset, deliveries, dead)
	}
	if len(ps.queue) != 0 || !ps.deadIn[0] {
		t.Errorf("a dead letter: queue %d, deadIn %v", len(ps.queue), ps.deadIn)
	}
	// Acknowledging it while it is written is allowed.
	if unsettled, err := ps.check(0); err != nil || !unsettled {
		t.Errorf("check while written: %v, %v", unsettled, err)
	}
	if !ps.deadDone(0) {
		t.Fatal("written: not unsettled any more")
	}
	ps.settle(0)
	// Offset 1, delivered once, is written and acknowledged meanwhile.
	if _, _, dead := ps.end(o[1], 1); !dead {
		t.Fatal("max_deliveries 1: not dead")
	}
	ps.settle(1)
	if ps.deadDone(1) {
		t.Error("a dead letter acknowledged while written is still to settle")
	}
	if got := ps.base(); got != 2 {
		t.Errorf("base %d, want 2", got)
	}
}

// TestPartStateCommitPoint: the commit is the first unsettled offset, the
// settled offsets beyond it its sparse acks, whatever order acks come in.
func TestPartStateCommitPoint(t *testing.T) {
	ps := newPartState("t", 0)
	if _, ok := ps.toCommit(); ok {
		t.Error("a commit before anything was read")
	}
	readN(ps, 10, 16)
	offers := takeAll(ps, nil)
	for _, off := range []int64{11, 13, 15} {
		ps.drop(offers[off-10])
		ps.settle(off)
	}
	tgt, ok := ps.toCommit()
	if !ok || tgt.Offset != 10 {
		t.Fatalf("commit %+v, %v; want offset 10", tgt, ok)
	}
	want := []sparseacks.Range{{From: 11, To: 12}, {From: 13, To: 14}, {From: 15, To: 16}}
	if got := ps.ackedRanges(10); !slices.Equal(got, want) {
		t.Errorf("acked %v, want %v", got, want)
	}
	ps.committedAt(tgt, nil)
	if _, ok := ps.toCommit(); ok {
		t.Error("a commit without change")
	}
	ps.settle(10)
	if tgt, _ := ps.toCommit(); tgt.Offset != 12 {
		t.Errorf("after settling 10: commit at %d, want 12", tgt.Offset)
	}
	failed := errors.New("broker down")
	ps.committedAt(tgt, failed)
	if ps.tried == nil || *ps.tried != tgt {
		t.Errorf("a failed commit is not kept as tried: %v", ps.tried)
	}
	for _, off := range []int64{12, 14} {
		ps.settle(off)
	}
	if tgt, _ := ps.toCommit(); tgt.Offset != 16 || tgt.Metadata != sparseacks.Encode(16, nil) {
		t.Errorf("all settled: commit %+v, want 16 without acks", tgt)
	}
}

// TestPartStateSparseAcksRoundTrip: a commit's sparse acks, read back as a
// new owner's starting point, skip exactly the acknowledged offsets; kept
// acknowledgements restore the same way.
func TestPartStateSparseAcksRoundTrip(t *testing.T) {
	ps := newPartState("t", 0)
	readN(ps, 0, 8)
	for _, o := range takeAll(ps, nil) {
		if off := o.rec.Offset; off%3 != 0 {
			ps.drop(o)
			ps.settle(off)
		}
	}
	tgt, _ := ps.toCommit()
	if tgt.Offset != 0 {
		t.Fatalf("commit at %d", tgt.Offset)
	}
	next := newPartState("t", 0)
	if err := next.startAt(tgt.Offset, tgt.Metadata); err != nil {
		t.Fatal(err)
	}
	readN(next, 0, 10)
	if got := offsetsOf(takeAll(next, nil)); !slices.Equal(got, []int64{0, 3, 6, 8, 9}) {
		t.Errorf("after the commit %+v: offered %v, want [0 3 6 8 9]", tgt, got)
	}
	if err := newPartState("t", 0).startAt(4, "not sparse acks"); err == nil {
		t.Error("foreign metadata: no error")
	}

	// Lost without a commit, then assigned again unchanged.
	k := ps.keep()
	back := newPartState("t", 0)
	if err := back.startAt(ps.committed, ps.committedMeta); err != nil {
		t.Fatal(err)
	}
	if !back.restore(k, true) {
		t.Fatal("not restored")
	}
	readN(back, 0, 8)
	if got := offsetsOf(takeAll(back, nil)); !slices.Equal(got, []int64{0, 3, 6}) {
		t.Errorf("restored: offered %v, want [0 3 6]", got)
	}
	moved := newPartState("t", 0)
	moved.startAt(5, "")
	if moved.restore(k, true) {
		t.Error("restored over another owner's commit")
	}
}

// TestPartStateCheck: acknowledgements of offsets not delivered, read
// again, or settled answer as the faces expect.
func TestPartStateCheck(t *testing.T) {
	ps := newPartState("t", 0)
	readN(ps, 0, 3)
	takeAll(ps, nil)
	for _, tc := range []struct {
		off       int64
		unsettled bool
		code      codes.Code
	}{
		{0, true, codes.OK},
		{3, false, codes.InvalidArgument},
		{-1, false, codes.InvalidArgument},
	} {
		unsettled, err := ps.check(tc.off)
		if unsettled != tc.unsettled || status.Code(err) != tc.code {
			t.Errorf("check(%d) = %v, %v; want %v, %v", tc.off, unsettled, err, tc.unsettled, tc.code)
		}
	}
	ps.reset(OffsetTarget{Offset: 1})
	readN(ps, 1, 2)
	if _, err := ps.check(2); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("an ack from before a reset: %v", err)
	}
	if _, err := ps.check(1); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("an ack of a record read again, not delivered yet: %v", err)
	}
	takeAll(ps, nil)
	ps.settle(1)
	if unsettled, err := ps.check(1); unsettled || err != nil {
		t.Errorf("an ack of a settled offset: %v, %v; want harmless", unsettled, err)
	}
}
