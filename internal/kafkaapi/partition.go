package kafkaapi

import (
	"cmp"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/offsets"
	"github.com/ferryproxy/ferry/internal/sparseacks"
)

// maxCommitMetadata bounds the sparse-ack metadata of one commit; Kafka
// refuses more than offset.metadata.max.bytes (4096 by default). Ranges
// that do not fit are left out, so those offsets are delivered again after
// a restart: at least once still holds.
const maxCommitMetadata = 4000

// partState tracks one assigned partition. Offsets below base() are
// settled; unsettled holds every read offset not yet acknowledged, queued
// or offered; acked offsets beyond base are the gaps between them, plus
// preAcked ranges (from the last commit's metadata) not read yet.
//
// A partState needs neither a Kafka client nor its member: the member
// holds its lock around every call, and does what involves the group (the
// poll loop's room, waking waiting sessions, writing dead letters,
// committing) with what these methods report.
type partState struct {
	topic     string
	partition int32
	gen       int   // bumped when the partition is reset; offers of older generations are void
	next      int64 // the offset after the last record read; -1 before the first when nothing was committed
	readHigh  int64 // the highest next ever, across resets: acks below it were delivered once
	unsettled offsets.Pending
	preAcked  []sparseacks.Range
	queue     []*kgo.Record // to deliver, ascending offsets
	offers    map[int64]*offer
	redeliver map[int64]int  // deliveries so far of queued records that were offered before
	deadIn    map[int64]bool // offsets being written to the dead-letter topic
	paused    bool
	// highWatermark is the partition's high watermark at the last fetch
	// that returned records of it, -1 before: from it, lag.
	highWatermark int64

	committed     int64 // what was last committed, -1 if nothing
	committedMeta string
	dirty         bool // commit even if offset and metadata look unchanged
	// tried is the last commit that failed since the last that succeeded:
	// a commit whose answer was lost (the broker went down) may have been
	// stored all the same.
	tried *OffsetTarget
}

// offer is a record delivered to a session and not yet settled.
type offer struct {
	rec        *kgo.Record
	deadline   time.Time
	session    *Session
	deliveries int
}

// message is the offer as delivered to a client.
func (o *offer) message() Message {
	rec := o.rec
	return Message{
		Topic:      rec.Topic,
		Partition:  rec.Partition,
		Offset:     rec.Offset,
		Key:        rec.Key,
		Value:      rec.Value,
		Headers:    rec.Headers,
		Timestamp:  rec.Timestamp,
		Deliveries: o.deliveries,
	}
}

// newPartState returns the state of a partition just assigned, before
// its committed offset is known: nothing read, nothing committed.
func newPartState(topic string, partition int32) *partState {
	return &partState{topic: topic, partition: partition, next: -1, committed: -1, highWatermark: -1}
}

// startAt has the partition read on from the group's commit, offset and
// metadata; offsets the metadata acknowledges as sparse acks are not
// delivered. The error is that of metadata that is not sparse acks, which
// is then ignored.
func (ps *partState) startAt(offset int64, meta string) error {
	ps.next, ps.committed, ps.committedMeta = offset, offset, meta
	acks, err := sparseacks.Decode(offset, meta)
	if err == nil {
		ps.preAcked = acks
		return nil
	}
	if meta == "" {
		return nil
	}
	return err
}

// add queues a record read from the partition.
func (ps *partState) add(r *kgo.Record) {
	if ps.next >= 0 && r.Offset < ps.next {
		return // read again after a reset to an earlier position than kgo's
	}
	ps.next = r.Offset + 1
	ps.readHigh = max(ps.readHigh, ps.next)
	for len(ps.preAcked) > 0 && ps.preAcked[0].To <= r.Offset {
		ps.preAcked = ps.preAcked[1:]
	}
	if len(ps.preAcked) > 0 && ps.preAcked[0].From <= r.Offset {
		return // acknowledged before the last commit
	}
	ps.unsettled.Add(r.Offset)
	ps.queue = append(ps.queue, r)
}

// deliverable reports whether the partition can deliver a record now: one
// is queued and fewer than maxUnacked are offered.
func (ps *partState) deliverable(maxUnacked int) bool {
	return len(ps.queue) > 0 && len(ps.offers) < maxUnacked
}

// take offers the first queued record to ss until deadline, in o, which
// it fills; a record delivered before counts its earlier deliveries.
func (ps *partState) take(o *offer, ss *Session, deadline time.Time) {
	rec := ps.queue[0]
	ps.queue[0] = nil
	ps.queue = ps.queue[1:]
	deliveries := 1
	if d, ok := ps.redeliver[rec.Offset]; ok {
		deliveries = d + 1
		delete(ps.redeliver, rec.Offset)
	}
	if ps.offers == nil {
		ps.offers = map[int64]*offer{}
	}
	*o = offer{rec: rec, deadline: deadline, session: ss, deliveries: deliveries}
	ps.offers[rec.Offset] = o
	if ss != nil {
		ss.outstanding++
	}
}

// drop removes an offer from the partition and its session, and clears
// it: it shares its block with other offers, which would otherwise keep
// its record in memory. Its offset stays unsettled.
func (ps *partState) drop(o *offer) {
	delete(ps.offers, o.rec.Offset)
	if o.session != nil {
		o.session.outstanding--
		o.session.fewerLocked()
	}
	*o = offer{}
}

// void drops every offer and starts a new generation: dead letters and
// commits in flight for the old one change nothing when they end.
func (ps *partState) void() {
	for _, o := range ps.offers {
		ps.drop(o)
	}
	ps.gen++
}

// check checks an acknowledgement of offset: it reports whether offset is
// unsettled, and is an error when the offset was not delivered, or not
// since the partition was read again.
func (ps *partState) check(offset int64) (bool, error) {
	if offset < 0 || ps.next < 0 || offset >= ps.next {
		if offset >= 0 && offset < ps.readHigh {
			// Delivered before the partition's offsets were set back.
			return false, errorf(codes.FailedPrecondition,
				"the offsets of partition %d of topic %q were set back since offset %d was delivered; it is delivered again", ps.partition, ps.topic, offset)
		}
		return false, errorf(codes.InvalidArgument, "offset %d of partition %d of topic %q was not delivered", offset, ps.partition, ps.topic)
	}
	if !ps.unsettled.Contains(offset) {
		return false, nil
	}
	if ps.offers[offset] == nil && !ps.deadIn[offset] {
		if _, again := ps.redeliver[offset]; !again {
			// Read but still queued: not delivered since this instance
			// read it (again, after a reset or a reassignment, or never).
			// Settling it would commit past a message nobody got.
			return false, errorf(codes.FailedPrecondition,
				"offset %d of partition %d of topic %q is waiting to be delivered (again); acknowledge it once it was delivered", offset, ps.partition, ps.topic)
		}
	}
	return true, nil
}

// settle marks offset acknowledged. It reports whether offset was
// unsettled, and whether a queued redelivery of it left the queue.
func (ps *partState) settle(offset int64) (settled, dequeued bool) {
	if !ps.unsettled.Finish(offset) {
		return false, false
	}
	if _, again := ps.redeliver[offset]; again {
		// Acknowledged late: it is queued for redelivery.
		if j, ok := slices.BinarySearchFunc(ps.queue, offset, recordAt); ok {
			ps.queue = slices.Delete(ps.queue, j, j+1)
			dequeued = true
		}
		delete(ps.redeliver, offset)
	}
	return true, dequeued
}

// end ends an offer that was not acknowledged: its record goes back to the
// queue or, once delivered maxDeliveries times (0 is no limit), is marked
// as being written to the dead-letter topic (dead), which the caller does.
func (ps *partState) end(o *offer, maxDeliveries int) (rec *kgo.Record, deliveries int, dead bool) {
	rec, deliveries = o.rec, o.deliveries
	ps.drop(o)
	if maxDeliveries > 0 && deliveries >= maxDeliveries {
		if ps.deadIn == nil {
			ps.deadIn = map[int64]bool{}
		}
		ps.deadIn[rec.Offset] = true
		return rec, deliveries, true
	}
	ps.requeue(rec, deliveries)
	return rec, deliveries, false
}

// deadDone ends the dead-letter write of offset; it reports whether offset
// is still unsettled (not acknowledged meanwhile), for the caller to settle
// or queue again.
func (ps *partState) deadDone(offset int64) bool {
	delete(ps.deadIn, offset)
	return ps.unsettled.Contains(offset)
}

// requeue puts a delivered record back in its place in the queue.
func (ps *partState) requeue(rec *kgo.Record, deliveries int) {
	if ps.redeliver == nil {
		ps.redeliver = map[int64]int{}
	}
	ps.redeliver[rec.Offset] = deliveries
	i, _ := slices.BinarySearchFunc(ps.queue, rec.Offset, recordAt)
	ps.queue = slices.Insert(ps.queue, i, rec)
}

// recordAt orders records by offset, for searching a queue.
func recordAt(r *kgo.Record, off int64) int { return cmp.Compare(r.Offset, off) }

// reset moves the partition to t, dropping what was read and offered of
// it; t's metadata is read as sparse acks.
func (ps *partState) reset(t OffsetTarget) {
	ps.void()
	ps.queue, ps.redeliver, ps.deadIn = nil, nil, nil
	ps.unsettled.Reset()
	ps.next = t.Offset
	ps.preAcked, _ = sparseacks.Decode(t.Offset, t.Metadata)
	ps.dirty, ps.tried = true, nil
}

// base is the first unsettled offset: what a commit writes.
func (ps *partState) base() int64 {
	return ps.unsettled.CommitPoint(ps.next)
}

// toCommit returns what a commit of the partition writes: its first
// unsettled offset and the settled offsets beyond it as sparse acks. ok is
// false when there is nothing to say (nothing read nor committed) or it
// is what was committed last.
func (ps *partState) toCommit() (t OffsetTarget, ok bool) {
	if ps.next < 0 {
		return OffsetTarget{}, false
	}
	off := ps.base()
	meta := ps.sparseMeta(off)
	if !ps.dirty && off == ps.committed && meta == ps.committedMeta {
		return OffsetTarget{}, false
	}
	return OffsetTarget{Partition: ps.partition, Offset: off, Metadata: meta}, true
}

// committedAt records the outcome of committing t: stored, or, on error,
// maybe stored (see tried).
func (ps *partState) committedAt(t OffsetTarget, err error) {
	if err != nil {
		ps.tried = &t
		return
	}
	ps.committed, ps.committedMeta, ps.dirty, ps.tried = t.Offset, t.Metadata, false, nil
}

// sparseMeta encodes the settled offsets beyond base, leaving out ranges
// that would make the metadata too long.
func (ps *partState) sparseMeta(base int64) string {
	ranges := ps.ackedRanges(base)
	meta := sparseacks.Encode(base, ranges)
	for len(meta) > maxCommitMetadata && len(ranges) > 0 {
		ranges = ranges[:len(ranges)*3/4]
		meta = sparseacks.Encode(base, ranges)
	}
	return meta
}

// ackedRanges returns the settled offsets beyond base, ascending.
func (ps *partState) ackedRanges(base int64) []sparseacks.Range {
	var ranges []sparseacks.Range
	prev := base
	ps.unsettled.Each(func(u int64) {
		if u > prev {
			ranges = append(ranges, sparseacks.Range{From: prev, To: u})
		}
		prev = u + 1
	})
	if ps.next > prev {
		ranges = append(ranges, sparseacks.Range{From: prev, To: ps.next})
	}
	// The leading range, if any, starts at base only when nothing is
	// unsettled, and then base is next: so every range here is a gap
	// between unsettled offsets or after the last one.
	if ps.unsettled.Len() == 0 {
		ranges = nil
	}
	return append(ranges, ps.preAcked...)
}

// keptAcks is what a member knew of a partition when it lost it without
// committing (a broker outage, an expired session, a revoke whose commit
// failed): its acknowledgements since the last commit. When the partition
// comes back and its committed offset and metadata are still what this
// member last committed, nobody moved it meanwhile, and the member goes on
// from its own knowledge instead of delivering acknowledged messages again.
// When they changed, another owner (or a SetOffsets) moved the partition:
// its commit stands and these acknowledgements are dropped.
type keptAcks struct {
	committed     int64 // what this member last committed, -1 if nothing
	committedMeta string
	tried         *OffsetTarget      // a failed commit, which may have been stored
	base          int64              // the first unsettled offset
	acked         []sparseacks.Range // settled ranges beyond base
	readHigh      int64              // see partState.readHigh
}

// keep returns what is to be kept of the partition when it is lost, or
// nil when nothing was read nor committed.
func (ps *partState) keep() *keptAcks {
	if ps.next < 0 {
		return nil
	}
	base := ps.base()
	return &keptAcks{
		committed:     ps.committed,
		committedMeta: ps.committedMeta,
		tried:         ps.tried,
		base:          base,
		acked:         ps.ackedRanges(base),
		readHigh:      ps.readHigh,
	}
}

// restore has ps, a partition assigned again whose commit was read
// (fetched) into it, go on from k, what was known when it was lost, if
// nobody committed it since. It reports whether it did.
func (ps *partState) restore(k *keptAcks, fetched bool) bool {
	ours := ps.committed == k.committed && ps.committedMeta == k.committedMeta ||
		k.tried != nil && ps.committed == k.tried.Offset && ps.committedMeta == k.tried.Metadata
	if !fetched || !ours || k.base < ps.committed {
		return false
	}
	ps.next, ps.preAcked, ps.readHigh = k.base, k.acked, k.readHigh
	ps.dirty = true // commit what was kept at the next tick
	return true
}
