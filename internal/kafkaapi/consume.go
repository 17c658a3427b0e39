package kafkaapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/sparseacks"
)

// maxCommitMetadata bounds the sparse-ack metadata of one commit; Kafka
// refuses more than offset.metadata.max.bytes (4096 by default). Ranges
// that do not fit are left out, so those offsets are delivered again after
// a restart: at least once still holds.
const maxCommitMetadata = 4000

// Open joins group (on first use in this Ferry instance) to consume topic
// and returns a session to take messages from. An unknown topic is
// NOT_FOUND.
func (s *Service) Open(ctx context.Context, cluster, group, topic string) (*Session, error) {
	if err := checkTopicGroup(topic, group); err != nil {
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
			return nil, status.Error(codes.Unavailable, "Ferry is shutting down")
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

// join creates the member for key, or returns the one another caller
// created meanwhile.
func (s *Service) join(ctx context.Context, c *kafka.Cluster, key memberKey) (*member, error) {
	adm, _, err := s.admin(c.Name())
	if err != nil {
		return nil, err
	}
	td, err := lookupTopic(ctx, adm, c, key.topic)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, status.Error(codes.Unavailable, "Ferry is shutting down")
	}
	if m := s.members[key]; m != nil {
		return m, nil
	}
	if limit := s.maxMembers(); s.live >= limit {
		return nil, status.Errorf(codes.ResourceExhausted,
			"this Ferry instance runs %d consumer group members, its limit (kafka_api.consume.max_group_members), and consuming topic %q in group %q needs one more; "+
				"retry once an idle member left (after kafka_api.consume.subscription_timeout, %v, without use), or raise the limit",
			s.live, key.topic, key.group, s.cfg.Consume.SubscriptionTimeout)
	}
	m, err := s.newMember(c, key, td.ID)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	s.members[key] = m
	s.logger.Info("joined consumer group", "cluster", key.cluster, "group", key.group, "topic", key.topic)
	return m, nil
}

// maxMembers is kafka_api.consume.max_group_members, or its default when
// a configuration built by hand left it unset.
func (s *Service) maxMembers() int {
	if n := s.cfg.Consume.MaxGroupMembers; n > 0 {
		return n
	}
	return config.Default().KafkaAPI.Consume.MaxGroupMembers
}

// checkDeadLetterTopic refuses a group whose name makes the dead-letter
// topic (kafka_api.consume.dead_letter_topic with {group} replaced) a name
// Kafka does not allow: its messages could never be moved there.
func (s *Service) checkDeadLetterTopic(group, topic string) error {
	cc := s.cfg.Consume
	if cc.MaxDeliveries <= 0 || cc.DeadLetterTopic == "" {
		return nil
	}
	dlt := deadLetterTopic(cc.DeadLetterTopic, topic, group)
	if err := CheckTopic(dlt); err != nil {
		return status.Errorf(codes.InvalidArgument, "group %q makes the dead-letter topic (kafka_api.consume.dead_letter_topic) %s", group, status.Convert(err).Message())
	}
	return nil
}

// deadLetterTopic is the dead-letter topic of group's messages of topic.
func deadLetterTopic(pattern, topic, group string) string {
	return strings.NewReplacer("{topic}", topic, "{group}", group).Replace(pattern)
}

// Ack acknowledges a delivered message without a session (Ack calls).
func (s *Service) Ack(ctx context.Context, cluster, group, topic string, partition int32, offset int64) error {
	m, err := s.local(cluster, group, topic)
	if err != nil {
		return err
	}
	return m.ack(partition, offset)
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
		return nil, status.Errorf(codes.FailedPrecondition,
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
			return status.FromContextError(ctx.Err()).Err()
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
	return ss.m.ack(partition, offset)
}

// AckAll acknowledges refs as Ack does each, under one lock, and returns
// those that failed, in order.
func (ss *Session) AckAll(refs []Ref) []RefError {
	m := ss.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var failed []RefError
	for _, r := range refs {
		if err := m.ackLocked(r.Partition, r.Offset); err != nil {
			failed = append(failed, RefError{Ref: r, Err: err})
		}
	}
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

type memberKey struct{ cluster, group, topic string }

// member is this instance's membership of one consumer group for one
// topic. Its poll goroutine reads records into per-partition queues;
// sessions take them as offers; acks settle offers; its tick goroutine
// redelivers expired offers and commits the first unsettled offset of each
// partition with the settled offsets beyond it as sparse acks.
type member struct {
	s       *Service
	key     memberKey
	topicID [16]byte
	cl      *kgo.Client   // set once, before ready is closed
	ready   chan struct{} // closed once cl is set: group callbacks may run before
	cfg     configView

	ctx    context.Context // ends when the member closes
	cancel context.CancelFunc
	done   chan struct{} // closed when both goroutines ended

	commitMu sync.Mutex // serializes commits; taken before mu

	mu         sync.Mutex
	parts      map[int32]*partState // the partitions assigned to this member
	order      []int32              // parts' keys, for round-robin delivery
	rr         int
	wake       chan struct{} // closed and replaced when something may be deliverable
	room       chan struct{} // closed and replaced when the poll loop may read again
	pollWaits  bool          // the poll loop waits on room
	waiting    int           // Next calls waiting
	sessions   int           // open sessions
	lastUsed   time.Time     // as of the last tick at which used was set
	used       bool          // used since the last tick; cheaper than a clock read per ack
	closing    bool
	fatal      error           // a group error no retry cures
	resets     []*resetRequest // applied by the poll goroutine between polls
	dead       []deadLetter    // to write to the dead-letter topic, by flushDead
	pollCancel context.CancelFunc
	offers     []offer // unused offers, allocated in blocks by newOfferLocked
	// kept holds what was acknowledged of partitions lost, or revoked
	// while their last commit failed, until they are assigned again.
	kept map[int32]*keptAcks
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

// configView is the consume configuration a member works with.
type configView struct {
	ackTimeout      time.Duration
	maxUnacked      int
	maxBuffered     int
	maxDeliveries   int
	deadLetterTopic string // placeholders replaced
	commitInterval  time.Duration
	idleTimeout     time.Duration
	maxWaiting      int
}

// partState tracks one assigned partition. Offsets below base() are
// settled; unsettled holds every read offset not yet acknowledged, queued
// or offered; acked offsets beyond base are the gaps between them, plus
// preAcked ranges (from the last commit's metadata) not read yet.
type partState struct {
	partition int32
	gen       int   // bumped when the partition is reset; offers of older generations are void
	next      int64 // the offset after the last record read; -1 before the first when nothing was committed
	readHigh  int64 // the highest next ever, across resets: acks below it were delivered once
	unsettled pending
	preAcked  []sparseacks.Range
	queue     []*kgo.Record // to deliver, ascending offsets
	offers    map[int64]*offer
	redeliver map[int64]int  // deliveries so far of queued records that were offered before
	deadIn    map[int64]bool // offsets being written to the dead-letter topic
	paused    bool

	committed     int64 // what was last committed, -1 if nothing
	committedMeta string
	dirty         bool // commit even if offset and metadata look unchanged
	// tried is the last commit that failed since the last that succeeded:
	// a commit whose answer was lost (the broker went down) may have been
	// stored all the same.
	tried *OffsetTarget
}

type offer struct {
	rec        *kgo.Record
	deadline   time.Time
	session    *Session
	deliveries int
}

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

type resetRequest struct {
	targets []OffsetTarget
	done    chan error
}

func (s *Service) newMember(c *kafka.Cluster, key memberKey, topicID [16]byte) (*member, error) {
	cc := s.cfg.Consume
	m := &member{
		s:       s,
		key:     key,
		topicID: topicID,
		cfg: configView{
			ackTimeout:      cc.AckTimeout,
			maxUnacked:      cc.MaxUnackedPerPartition,
			maxBuffered:     cc.MaxBufferedPerPartition,
			maxDeliveries:   cc.MaxDeliveries,
			commitInterval:  cc.CommitInterval,
			idleTimeout:     cc.SubscriptionTimeout,
			maxWaiting:      cc.MaxWaitingPolls,
			deadLetterTopic: deadLetterTopic(cc.DeadLetterTopic, key.topic, key.group),
		},
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
		parts:    map[int32]*partState{},
		wake:     make(chan struct{}),
		room:     make(chan struct{}),
		lastUsed: time.Now(),
	}
	m.ctx, m.cancel = context.WithCancel(s.ctx)
	reset := kgo.NewOffset().AtStart()
	if cc.Start == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	cl, err := c.NewGroupClient(key.group, kafka.MemberInstanceID(cc.GroupInstanceID, key.topic), append([]kgo.Opt{
		kgo.ConsumeTopics(key.topic),
		kgo.ConsumeResetOffset(reset),
		kgo.SessionTimeout(cc.SessionTimeout),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
	}, s.memberOpts...)...)
	if err != nil {
		m.cancel()
		return nil, err
	}
	m.cl = cl
	close(m.ready)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.pollLoop() }()
	go func() { defer wg.Done(); m.tickLoop() }()
	s.live++ // under s.mu, held by join
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		wg.Wait()
		s.mu.Lock()
		s.live--
		s.mu.Unlock()
		close(m.done)
	}()
	return m, nil
}

// open starts a session, or returns nil when the member is leaving.
func (m *member) open() *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil
	}
	m.sessions++
	m.used = true
	return &Session{m: m}
}

// close commits what was acknowledged and leaves the group. Offers still
// out are delivered again by the partitions' next owners.
func (m *member) close() {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		<-m.done
		return
	}
	m.closing = true
	m.broadcastLocked()
	m.mu.Unlock()
	// Closing the client revokes every partition (onRevoked commits them)
	// and leaves the group; the poll loop then ends.
	m.cl.Close()
	m.cancel()
	<-m.done
	m.mu.Lock()
	for _, r := range m.resets {
		r.done <- status.Error(codes.Unavailable, "the group member closed")
	}
	m.resets = nil
	m.mu.Unlock()
	m.s.logger.Info("left consumer group", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic)
}

func (m *member) broadcastLocked() {
	close(m.wake)
	m.wake = make(chan struct{})
}

func (m *member) next(ctx context.Context, ss *Session) (*Message, error) {
	m.mu.Lock()
	if m.waiting >= m.cfg.maxWaiting {
		m.mu.Unlock()
		return nil, status.Errorf(codes.ResourceExhausted, "too many requests waiting for topic %q in group %q (at most %d)", m.key.topic, m.key.group, m.cfg.maxWaiting)
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
			return nil, status.Error(codes.FailedPrecondition, "the session is closed")
		case m.closing:
			return nil, status.Error(codes.Unavailable, "Ferry is leaving the consumer group")
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
			return nil, status.FromContextError(ctx.Err()).Err()
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
		if len(ps.queue) == 0 || len(ps.offers) >= m.cfg.maxUnacked {
			continue
		}
		rec := ps.queue[0]
		if budget < math.MaxInt && recordSize(rec) > budget {
			return Message{}, false
		}
		m.rr = (m.rr + i + 1) % n
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
		o := m.newOfferLocked()
		*o = offer{rec: rec, deadline: now.Add(m.cfg.ackTimeout), session: ss, deliveries: deliveries}
		ps.offers[rec.Offset] = o
		ss.outstanding++
		m.drainedLocked(ps)
		return Message{
			Topic:      rec.Topic,
			Partition:  rec.Partition,
			Offset:     rec.Offset,
			Key:        rec.Key,
			Value:      rec.Value,
			Headers:    rec.Headers,
			Timestamp:  rec.Timestamp,
			Deliveries: deliveries,
		}, true
	}
	return Message{}, false
}

// base is the first unsettled offset: what a commit writes.
func (ps *partState) base() int64 {
	if off, ok := ps.unsettled.first(); ok {
		return off
	}
	return ps.next
}

func (m *member) ack(partition int32, offset int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ackLocked(partition, offset)
}

func (m *member) ackLocked(partition int32, offset int64) error {
	m.used = true
	ps, err := m.partLocked(partition, offset)
	if err != nil || ps == nil {
		return err
	}
	if o := ps.offers[offset]; o != nil {
		m.dropOfferLocked(ps, o)
	}
	m.settleLocked(ps, offset)
	return nil
}

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
		return nil, status.Errorf(codes.FailedPrecondition,
			"partition %d of topic %q is not assigned to this Ferry instance in group %q (any more); its unacknowledged messages are delivered again by its owner",
			partition, m.key.topic, m.key.group)
	}
	if offset < 0 || ps.next < 0 || offset >= ps.next {
		if offset >= 0 && offset < ps.readHigh {
			// Delivered before the partition's offsets were set back.
			return nil, status.Errorf(codes.FailedPrecondition,
				"the offsets of partition %d of topic %q were set back since offset %d was delivered; it is delivered again", partition, m.key.topic, offset)
		}
		return nil, status.Errorf(codes.InvalidArgument, "offset %d of partition %d of topic %q was not delivered", offset, partition, m.key.topic)
	}
	if !ps.unsettled.contains(offset) {
		return nil, nil
	}
	if ps.offers[offset] == nil && !ps.deadIn[offset] {
		if _, again := ps.redeliver[offset]; !again {
			// Read but still queued: not delivered since this instance
			// read it (again, after a reset or a reassignment, or never).
			// Settling it would commit past a message nobody got.
			return nil, status.Errorf(codes.FailedPrecondition,
				"offset %d of partition %d of topic %q is waiting to be delivered (again); acknowledge it once it was delivered", offset, partition, m.key.topic)
		}
	}
	return ps, nil
}

// dropOfferLocked removes an offer from its partition and session, and
// clears it: it shares its block with other offers, which would otherwise
// keep its record in memory.
func (m *member) dropOfferLocked(ps *partState, o *offer) {
	delete(ps.offers, o.rec.Offset)
	if o.session != nil {
		o.session.outstanding--
		o.session.fewerLocked()
	}
	*o = offer{}
}

// settleLocked marks offset acknowledged.
func (m *member) settleLocked(ps *partState, offset int64) {
	if !ps.unsettled.remove(offset) {
		return
	}
	if _, again := ps.redeliver[offset]; again {
		// Acknowledged late: it is queued for redelivery.
		if j, ok := slices.BinarySearchFunc(ps.queue, offset, recordAt); ok {
			ps.queue = slices.Delete(ps.queue, j, j+1)
			m.drainedLocked(ps)
		}
		delete(ps.redeliver, offset)
	}
	if m.waiting > 0 && len(ps.offers) == m.cfg.maxUnacked-1 {
		m.broadcastLocked() // the partition may deliver again
	}
}

// endOfferLocked ends an offer that was not acknowledged: the record goes
// back to the queue, or, once delivered max_deliveries times, to the
// member's dead letters, which flushDead writes after the lock is released.
func (m *member) endOfferLocked(ps *partState, o *offer, why string) {
	rec, deliveries := o.rec, o.deliveries
	m.dropOfferLocked(ps, o)
	if m.cfg.maxDeliveries > 0 && deliveries >= m.cfg.maxDeliveries {
		if ps.deadIn == nil {
			ps.deadIn = map[int64]bool{}
		}
		ps.deadIn[rec.Offset] = true
		m.dead = append(m.dead, deadLetter{ps: ps, gen: ps.gen, rec: rec, deliveries: deliveries})
		return
	}
	m.requeueLocked(ps, rec, deliveries)
	m.s.logger.Debug("message to be delivered again", "topic", m.key.topic, "group", m.key.group,
		"partition", ps.partition, "offset", rec.Offset, "deliveries", deliveries, "why", why)
}

// requeueLocked puts a delivered record back in its place in the queue.
func (m *member) requeueLocked(ps *partState, rec *kgo.Record, deliveries int) {
	if ps.redeliver == nil {
		ps.redeliver = map[int64]int{}
	}
	ps.redeliver[rec.Offset] = deliveries
	i, _ := slices.BinarySearchFunc(ps.queue, rec.Offset, recordAt)
	ps.queue = slices.Insert(ps.queue, i, rec)
}

// recordAt orders records by offset, for searching a queue.
func recordAt(r *kgo.Record, off int64) int { return cmp.Compare(r.Offset, off) }

// deadLetter is a record on its way to the dead-letter topic.
type deadLetter struct {
	ps         *partState
	gen        int
	rec        *kgo.Record
	deliveries int
}

// flushDead writes the member's dead letters. It must be called without
// m.mu: producing can block while the producer's buffer is full, and the
// callbacks that free it take m.mu. A record is settled once Kafka
// acknowledged it; if writing fails it is queued again.
func (m *member) flushDead() {
	m.mu.Lock()
	dead := m.dead
	m.dead = nil
	m.mu.Unlock()
	for _, d := range dead {
		rec := d.rec
		headers := append(slices.Clip(rec.Headers),
			kgo.RecordHeader{Key: "ferry-dead-letter-topic", Value: []byte(rec.Topic)},
			kgo.RecordHeader{Key: "ferry-dead-letter-partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			kgo.RecordHeader{Key: "ferry-dead-letter-offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
			kgo.RecordHeader{Key: "ferry-dead-letter-group", Value: []byte(m.key.group)},
			kgo.RecordHeader{Key: "ferry-dead-letter-deliveries", Value: []byte(strconv.Itoa(d.deliveries))},
		)
		dl := Record{Key: rec.Key, Value: rec.Value, Headers: headers, Partition: -1, Timestamp: rec.Timestamp}
		// TryProduce: a full producer buffer fails the write at once (the
		// record is delivered again) rather than stalling the caller.
		if err := m.s.produceAsync(m.key.cluster, m.cfg.deadLetterTopic, dl, func(_ Result, err error) { m.deadWritten(d, err) }, true); err != nil {
			m.deadWritten(d, err)
		}
	}
}

// deadWritten settles a dead letter Kafka acknowledged, or queues it again.
func (m *member) deadWritten(d deadLetter, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps, rec := d.ps, d.rec
	if m.parts[ps.partition] != ps || ps.gen != d.gen {
		return // reassigned or reset meanwhile: no longer ours to settle
	}
	delete(ps.deadIn, rec.Offset)
	if !ps.unsettled.contains(rec.Offset) {
		return // acknowledged while it was being written
	}
	if err != nil {
		m.s.logger.Error("writing to the dead-letter topic failed; the message is delivered again",
			"topic", m.key.topic, "group", m.key.group, "partition", ps.partition, "offset", rec.Offset,
			"dead_letter_topic", m.cfg.deadLetterTopic, "error", err)
		m.requeueLocked(ps, rec, d.deliveries-1)
		m.broadcastLocked()
		return
	}
	m.s.logger.Warn("message moved to the dead-letter topic", "topic", m.key.topic, "group", m.key.group,
		"partition", ps.partition, "offset", rec.Offset, "deliveries", d.deliveries, "dead_letter_topic", m.cfg.deadLetterTopic)
	m.settleLocked(ps, rec.Offset)
}

// pollLoop reads records into the partition queues and applies offset
// resets between polls, so no record read before a reset is queued after
// it.
func (m *member) pollLoop() {
	for {
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			return
		}
		for len(m.resets) == 0 && m.fullLocked() {
			room := m.room
			m.pollWaits = true
			m.mu.Unlock()
			select {
			case <-room:
			case <-m.ctx.Done():
				return
			}
			m.mu.Lock()
			m.pollWaits = false
		}
		resets := m.resets
		m.resets = nil
		pctx, cancel := context.WithCancel(m.ctx)
		m.pollCancel = cancel
		m.mu.Unlock()
		if len(resets) > 0 {
			cancel()
			for _, r := range resets {
				r.done <- m.applyReset(r.targets)
			}
			continue
		}
		fetches := m.cl.PollRecords(pctx, 10_000)
		cancel()
		if fetches.IsClientClosed() || m.ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			m.s.logger.Warn("reading failed", append([]any{"cluster", m.key.cluster, "group", m.key.group}, append(kafka.FetchErrorAttrs(topic, p), "error", err)...)...)
			if errors.Is(err, kerr.GroupAuthorizationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) {
				m.mu.Lock()
				m.fatal = status.Errorf(codes.PermissionDenied, "consuming topic %q in group %q: %v", m.key.topic, m.key.group, err)
				m.broadcastLocked()
				m.mu.Unlock()
			}
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		m.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			if ps := m.parts[r.Partition]; ps != nil { // else revoked meanwhile
				ps.add(r)
			}
		})
		m.broadcastLocked()
		m.mu.Unlock()
	}
}

// fullLocked reports whether the poll loop should wait before reading
// more: some partition that is being drained has max_buffered_per_partition
// records queued. A partition that cannot be drained, because it has
// max_unacked_per_partition offers out, is paused in franz-go instead, so
// it neither grows nor holds the others back. Pausing is kept for that
// case because franz-go drops a paused partition's buffered fetch, which is
// then read again: pausing partitions that drain would read them twice.
func (m *member) fullLocked() bool {
	full := false
	var pause []int32
	for _, ps := range m.parts {
		if ps.paused || len(ps.queue) < m.cfg.maxBuffered {
			continue
		}
		if len(ps.offers) >= m.cfg.maxUnacked {
			ps.paused = true
			pause = append(pause, ps.partition)
			continue
		}
		full = true
	}
	if len(pause) > 0 {
		m.cl.PauseFetchPartitions(map[string][]int32{m.key.topic: pause})
	}
	return full
}

// drainedLocked runs when records left ps's queue: the poll loop is woken
// if the partition has room now (or just got stuck and is to be paused),
// and a paused partition that drained to half its bound reads again.
func (m *member) drainedLocked(ps *partState) {
	if m.pollWaits && (len(ps.queue) < m.cfg.maxBuffered || len(ps.offers) >= m.cfg.maxUnacked) {
		m.roomLocked()
	}
	if ps.paused && len(ps.queue) <= m.cfg.maxBuffered/2 {
		ps.paused = false
		m.cl.ResumeFetchPartitions(map[string][]int32{m.key.topic: {ps.partition}})
	}
}

// roomLocked wakes the poll loop if it waits for room.
func (m *member) roomLocked() {
	if m.pollWaits {
		close(m.room)
		m.room = make(chan struct{})
		m.pollWaits = false
	}
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
	ps.unsettled.add(r.Offset)
	ps.queue = append(ps.queue, r)
}

// tickLoop redelivers expired offers, commits, and leaves the group when
// nobody used the member for the subscription timeout.
func (m *member) tickLoop() {
	every := min(m.cfg.commitInterval, m.cfg.ackTimeout/4, time.Second)
	every = max(every, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	lastCommit := time.Now()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			m.mu.Lock()
			expired := false
			for _, ps := range m.parts {
				for _, o := range ps.offers {
					if now.After(o.deadline) {
						m.endOfferLocked(ps, o, "ack timeout")
						expired = true
					}
				}
			}
			if expired {
				m.broadcastLocked()
			}
			if m.used {
				m.lastUsed, m.used = now, false
			}
			idle := m.sessions == 0 && m.waiting == 0 && now.Sub(m.lastUsed) > m.cfg.idleTimeout
			m.mu.Unlock()
			m.flushDead()
			if idle {
				m.s.retire(m)
				return
			}
			if now.Sub(lastCommit) >= m.cfg.commitInterval {
				lastCommit = now
				if err := m.commit(m.ctx, nil); err != nil && m.ctx.Err() == nil {
					m.s.logger.Warn("committing offsets failed; retrying", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic, "error", err)
				}
			}
		}
	}
}

// retire removes an idle member and closes it. It runs on the member's
// tick loop, which close waits for, so the close gets a goroutine of its
// own, owned by the service: Close waits for it, and so for the member's
// last commit and its leaving the group. (The tick loop's own goroutine
// still counts in s.wg here, so the Add cannot race Close's Wait.)
func (s *Service) retire(m *member) {
	s.mu.Lock()
	if s.members[m.key] == m {
		delete(s.members, m.key)
	}
	s.mu.Unlock()
	s.logger.Info("consumer group member idle: leaving", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		m.close()
	}()
}

// commit writes, for the given partitions (all when nil), the first
// unsettled offset and the settled offsets beyond it as sparse acks, when
// they changed since the last commit. It commits as a member of the group,
// which Kafka accepts for any partition of the topic.
func (m *member) commit(ctx context.Context, only []int32) error {
	m.commitMu.Lock()
	defer m.commitMu.Unlock()
	type entry struct {
		ps     *partState
		gen    int
		offset int64
		meta   string
	}
	var entries []entry
	m.mu.Lock()
	for p, ps := range m.parts {
		if only != nil && !slices.Contains(only, p) {
			continue
		}
		if ps.next < 0 {
			continue // nothing read and nothing committed: nothing to say
		}
		off := ps.base()
		meta := ps.sparseMeta(off)
		if !ps.dirty && off == ps.committed && meta == ps.committedMeta {
			continue
		}
		entries = append(entries, entry{ps, ps.gen, off, meta})
	}
	m.mu.Unlock()
	if len(entries) == 0 {
		return nil
	}
	offsets := make([]OffsetTarget, len(entries))
	for i, e := range entries {
		offsets[i] = OffsetTarget{Partition: e.ps.partition, Offset: e.offset, Metadata: e.meta}
	}
	err := m.commitOffsets(ctx, offsets)
	m.mu.Lock()
	for i, e := range entries {
		switch {
		case e.ps.gen != e.gen:
		case err != nil:
			e.ps.tried = &offsets[i]
		default:
			e.ps.committed, e.ps.committedMeta, e.ps.dirty, e.ps.tried = e.offset, e.meta, false, nil
		}
	}
	m.mu.Unlock()
	return err
}

// commitOffsets sends one OffsetCommit as this member of the group.
func (m *member) commitOffsets(ctx context.Context, offsets []OffsetTarget) error {
	memberID, generation := m.cl.GroupMetadata()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = m.key.group
	req.MemberID = memberID
	req.Generation = generation
	t := kmsg.NewOffsetCommitRequestTopic()
	t.Topic = m.key.topic
	t.TopicID = m.topicID
	for _, o := range offsets {
		p := kmsg.NewOffsetCommitRequestTopicPartition()
		p.Partition = o.Partition
		p.Offset = o.Offset
		p.LeaderEpoch = -1
		meta := o.Metadata
		p.Metadata = &meta
		t.Partitions = append(t.Partitions, p)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		return err
	}
	var errs []error
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				errs = append(errs, fmt.Errorf("partition %d: %w", rp.Partition, err))
			}
		}
	}
	return errors.Join(errs...)
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
	ps.unsettled.each(func(u int64) {
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
	if ps.unsettled.len() == 0 {
		ranges = nil
	}
	return append(ranges, ps.preAcked...)
}

// onAssigned starts tracking newly assigned partitions from their committed
// offsets and sparse acks.
func (m *member) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	<-m.ready
	parts := assigned[m.key.topic]
	if len(parts) == 0 {
		return
	}
	// franz-go keeps a partition paused across assignments; one this
	// member paused before it lost the partition must read again.
	cl.ResumeFetchPartitions(map[string][]int32{m.key.topic: parts})
	committed, fetched := m.fetchCommitted(ctx, parts)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range parts {
		ps := &partState{partition: p, next: -1, committed: -1}
		if c, ok := committed[p]; ok && c.Offset >= 0 {
			ps.next, ps.committed, ps.committedMeta = c.Offset, c.Offset, c.Metadata
			if acks, err := sparseacks.Decode(c.Offset, c.Metadata); err == nil {
				ps.preAcked = acks
			} else if c.Metadata != "" {
				m.s.logger.Debug("commit metadata is not sparse acks; ignoring it", "partition", p, "metadata", c.Metadata, "error", err)
			}
		}
		if k := m.kept[p]; k != nil {
			delete(m.kept, p)
			m.restoreLocked(ps, k, fetched)
		}
		m.parts[p] = ps
	}
	m.syncOrderLocked()
	m.roomLocked() // new partitions are to be read
	m.s.logger.Info("partitions assigned", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic, "partitions", parts)
}

// restoreLocked has ps, a partition assigned again, go on from what this
// member knew when it lost the partition, if nobody committed it since
// (fetched says whether ps's commit was read at all).
func (m *member) restoreLocked(ps *partState, k *keptAcks, fetched bool) {
	attrs := []any{"cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic, "partition", ps.partition}
	ours := ps.committed == k.committed && ps.committedMeta == k.committedMeta ||
		k.tried != nil && ps.committed == k.tried.Offset && ps.committedMeta == k.tried.Metadata
	if !fetched || !ours || k.base < ps.committed {
		m.s.logger.Warn("partition came back moved by another member or an offset change; the acknowledgements made here before it was lost and not committed are dropped, so those messages are delivered again",
			append(attrs, "committed", ps.committed, "kept_committed", k.committed, "commit_read", fetched)...)
		return
	}
	ps.next, ps.preAcked, ps.readHigh = k.base, k.acked, k.readHigh
	ps.dirty = true // commit what was kept at the next tick
	m.s.logger.Info("partition came back unchanged; going on from the acknowledgements made before it was lost",
		append(attrs, "offset", k.base, "acked", sparseacks.Human(k.acked))...)
}

// fetchCommitted reads the group's committed offsets and metadata; ok is
// false when it could not (none is then taken for no commit).
func (m *member) fetchCommitted(ctx context.Context, parts []int32) (out map[int32]OffsetTarget, ok bool) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = m.key.group
	t := kmsg.NewOffsetFetchRequestTopic()
	t.Topic = m.key.topic
	t.Partitions = parts
	req.Topics = append(req.Topics, t)
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = m.key.group
	gt := kmsg.NewOffsetFetchRequestGroupTopic()
	gt.Topic = m.key.topic
	gt.TopicID = m.topicID
	gt.Partitions = parts
	g.Topics = append(g.Topics, gt)
	req.Groups = append(req.Groups, g)
	out = map[int32]OffsetTarget{}
	for attempt := 0; ; attempt++ {
		resp, err := req.RequestWith(ctx, m.cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			collect := func(p int32, off int64, meta *string, code int16) {
				if kerr.ErrorForCode(code) == nil {
					out[p] = OffsetTarget{Partition: p, Offset: off, Metadata: derefString(meta)}
				}
			}
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					collect(rp.Partition, rp.Offset, rp.Metadata, rp.ErrorCode)
				}
			}
			for _, rg := range resp.Groups {
				for _, rt := range rg.Topics {
					for _, rp := range rt.Partitions {
						collect(rp.Partition, rp.Offset, rp.Metadata, rp.ErrorCode)
					}
				}
			}
			return out, true
		}
		if ctx.Err() != nil || attempt == 4 {
			// Without the committed metadata the sparse acks are lost:
			// those messages are delivered again (at least once).
			m.s.logger.Warn("reading committed offsets failed; acknowledged messages beyond them may be delivered again", "group", m.key.group, "topic", m.key.topic, "error", err)
			return out, false
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// onRevoked commits the revoked partitions' final state and forgets them.
func (m *member) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	<-m.ready
	parts := revoked[m.key.topic]
	if len(parts) == 0 {
		return
	}
	if err := m.commit(ctx, parts); err != nil {
		m.s.logger.Warn("committing revoked partitions failed; their acknowledgements are kept in case they come back, else their next owner delivers those messages again",
			"group", m.key.group, "topic", m.key.topic, "partitions", parts, "error", err)
		m.forget(parts, true)
		return
	}
	m.forget(parts, false)
}

// onLost forgets partitions without committing, since another member may
// own them already, but keeps their acknowledgements for when they come
// back (a broker outage, a session that expired).
func (m *member) onLost(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
	if parts := lost[m.key.topic]; len(parts) > 0 {
		m.s.logger.Warn("partitions lost; their acknowledgements are kept in case they come back", "group", m.key.group, "topic", m.key.topic, "partitions", parts)
		m.forget(parts, true)
	}
}

// forget drops partitions the member no longer owns; with keep, what was
// acknowledged of them and not committed is kept (see keptAcks).
func (m *member) forget(parts []int32, keep bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range parts {
		ps := m.parts[p]
		if ps == nil {
			continue
		}
		delete(m.kept, p)
		if keep && ps.next >= 0 {
			if m.kept == nil {
				m.kept = map[int32]*keptAcks{}
			}
			base := ps.base()
			m.kept[p] = &keptAcks{
				committed:     ps.committed,
				committedMeta: ps.committedMeta,
				tried:         ps.tried,
				base:          base,
				acked:         ps.ackedRanges(base),
				readHigh:      ps.readHigh,
			}
		}
		for _, o := range ps.offers {
			m.dropOfferLocked(ps, o)
		}
		ps.gen++
		delete(m.parts, p)
	}
	m.syncOrderLocked()
	m.broadcastLocked()
	m.roomLocked() // a full partition may have gone
}

func (m *member) syncOrderLocked() {
	m.order = m.order[:0]
	for p := range m.parts {
		m.order = append(m.order, p)
	}
	slices.Sort(m.order)
	m.rr = 0
}

// SetOffsets commits offsets for group on topic. For a group this
// instance is a member of, it takes effect at once: the member drops what
// it had read of those partitions and reads on from the new offsets.
func (s *Service) SetOffsets(ctx context.Context, cluster, group, topic string, targets []OffsetTarget) ([]OffsetTarget, error) {
	if err := checkTopicGroup(topic, group); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no offsets given")
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, err
	}
	td, err := lookupTopic(ctx, adm, c, topic)
	if err != nil {
		return nil, err
	}
	seen := map[int32]bool{}
	for _, t := range targets {
		if _, ok := td.Partitions[t.Partition]; !ok {
			return nil, status.Errorf(codes.InvalidArgument, "topic %q has no partition %d (it has %d)", topic, t.Partition, len(td.Partitions))
		}
		if t.Offset < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "offset %d for partition %d is negative", t.Offset, t.Partition)
		}
		if seen[t.Partition] {
			return nil, status.Errorf(codes.InvalidArgument, "partition %d is given twice", t.Partition)
		}
		seen[t.Partition] = true
	}
	if err := checkInRange(ctx, adm, c, topic, targets); err != nil {
		return nil, err
	}
	s.mu.Lock()
	m := s.members[memberKey{c.Name(), group, topic}]
	s.mu.Unlock()
	if m != nil {
		if err := m.checkOwners(ctx, adm, targets); err != nil {
			return nil, err
		}
		if err := m.requestReset(ctx, targets); err == nil {
			return targets, nil
		} else if status.Code(err) != codes.Unavailable {
			return nil, err
		}
		// The member was leaving: commit as a non-member below.
	}
	if err := commitAsAdmin(ctx, adm, group, topic, targets); err != nil {
		if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.RebalanceInProgress) {
			return nil, status.Errorf(codes.FailedPrecondition,
				"group %q has active members that are not on this Ferry instance; send the request to the instance consuming topic %q in the group, or stop the group's consumers: %v", group, topic, err)
		}
		return nil, kafkaErr(fmt.Sprintf("committing offsets of group %q", group), err)
	}
	return targets, nil
}

// checkInRange refuses targets outside their partition's log, from its
// first offset to its end (the next offset to be written). Past the end,
// the member's fetch is out of range and franz-go resets it to
// kafka_api.consume.start, below the position the member expects, so the
// partition would deliver nothing, new records included, until it caught
// up; before the start, the records are gone. Refusing, rather than
// clamping, keeps a client from believing it moved where it did not.
func checkInRange(ctx context.Context, adm *kadm.Client, c *kafka.Cluster, topic string, targets []OffsetTarget) error {
	on := fmt.Sprintf("of topic %q on cluster %q", topic, c.Name())
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return kafkaErr("listing the start offsets "+on, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return kafkaErr("listing the end offsets "+on, err)
	}
	var bad []string
	for _, t := range targets {
		start, ok1 := starts.Lookup(topic, t.Partition)
		end, ok2 := ends.Lookup(topic, t.Partition)
		if !ok1 || !ok2 {
			return status.Errorf(codes.Unavailable, "listing the offsets %s: partition %d missing from the answer", on, t.Partition)
		}
		if t.Offset < start.Offset || t.Offset > end.Offset {
			bad = append(bad, fmt.Sprintf("offset %d of partition %d is outside %d to %d", t.Offset, t.Partition, start.Offset, end.Offset))
		}
	}
	if len(bad) > 0 {
		return status.Errorf(codes.InvalidArgument,
			"%s (topic %q): an offset must be from the partition's first offset to its end, the next offset to be written (GetOffsets shows both); nothing was changed",
			strings.Join(bad, "; "), topic)
	}
	return nil
}

// checkOwners refuses targets for partitions that another member of the
// group is assigned: that member goes on from its own position and commits
// over the new offset, so setting it here would not last. (Kafka's own
// tools refuse a reset while a group has members at all; Ferry applies it
// to the partitions its member holds.) The check reads the group's
// assignment from Kafka, so a rebalance in between can still slip past it.
func (m *member) checkOwners(ctx context.Context, adm *kadm.Client, targets []OffsetTarget) error {
	m.mu.Lock()
	var foreign []int32
	for _, t := range targets {
		if m.parts[t.Partition] == nil {
			foreign = append(foreign, t.Partition)
		}
	}
	m.mu.Unlock()
	if len(foreign) == 0 {
		return nil
	}
	self, _ := m.cl.GroupMetadata()
	infos, err := describeGroups(ctx, adm, []string{m.key.group})
	if err != nil {
		return kafkaErr(fmt.Sprintf("describing group %q", m.key.group), err)
	}
	var owners []string
	var taken []int32
	for _, mem := range infos[m.key.group].Members {
		if mem.MemberID == self {
			continue
		}
		var theirs []int32
		for _, p := range mem.Assigned[m.key.topic] {
			if slices.Contains(foreign, p) {
				theirs = append(theirs, p)
			}
		}
		if len(theirs) > 0 {
			taken = append(taken, theirs...)
			owners = append(owners, fmt.Sprintf("%v to member %s (client %q at %s)", theirs, mem.MemberID, mem.ClientID, mem.ClientHost))
		}
	}
	if len(owners) == 0 {
		return nil // nobody else holds them: this member commits them
	}
	slices.Sort(taken)
	return status.Errorf(codes.FailedPrecondition,
		"partitions %v of topic %q are assigned to other members of group %q (%s), which would go on from their own positions; "+
			"nothing was changed: set those partitions' offsets through the Ferry instance consuming them, or stop the other consumers",
		taken, m.key.topic, m.key.group, strings.Join(owners, "; "))
}

// requestReset has the poll goroutine apply targets between two polls.
func (m *member) requestReset(ctx context.Context, targets []OffsetTarget) error {
	r := &resetRequest{targets: targets, done: make(chan error, 1)}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return status.Error(codes.Unavailable, "the group member is leaving")
	}
	m.used = true
	m.resets = append(m.resets, r)
	if m.pollCancel != nil {
		m.pollCancel()
	}
	m.roomLocked()
	m.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// applyReset runs on the poll goroutine: it moves the member's own
// partitions to their targets (dropping what was read and offered of them)
// and commits every target as a member of the group.
func (m *member) applyReset(targets []OffsetTarget) error {
	seek := map[int32]kgo.EpochOffset{}
	m.mu.Lock()
	for _, t := range targets {
		ps := m.parts[t.Partition]
		if ps == nil {
			continue
		}
		for _, o := range ps.offers {
			m.dropOfferLocked(ps, o)
		}
		ps.gen++
		ps.queue, ps.redeliver, ps.deadIn = nil, nil, nil
		ps.unsettled.reset()
		ps.next = t.Offset
		ps.preAcked, _ = sparseacks.Decode(t.Offset, t.Metadata)
		ps.dirty, ps.tried = true, nil
		if ps.paused {
			ps.paused = false
			m.cl.ResumeFetchPartitions(map[string][]int32{m.key.topic: {t.Partition}})
		}
		seek[t.Partition] = kgo.EpochOffset{Epoch: -1, Offset: t.Offset}
	}
	m.broadcastLocked()
	m.mu.Unlock()
	if len(seek) > 0 {
		m.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{m.key.topic: seek})
	}
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	// Under commitMu: a periodic commit of the old positions must not land
	// after this one.
	m.commitMu.Lock()
	err := m.commitOffsets(ctx, targets)
	m.commitMu.Unlock()
	if err != nil {
		return kafkaErr(fmt.Sprintf("committing offsets of group %q", m.key.group), err)
	}
	m.mu.Lock()
	for _, t := range targets {
		if ps := m.parts[t.Partition]; ps != nil && ps.next == t.Offset && ps.unsettled.len() == 0 {
			ps.committed, ps.committedMeta, ps.dirty = t.Offset, t.Metadata, false
		}
	}
	m.mu.Unlock()
	m.s.logger.Info("offsets set", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic, "offsets", targets)
	return nil
}

// ResetOffsets moves every partition of topic for group to the first
// record at or after at (its end when there is none), or, when at is zero,
// to position "earliest" or "latest". Like SetOffsets it takes effect at
// once for members this instance runs.
func (s *Service) ResetOffsets(ctx context.Context, cluster, group, topic string, at time.Time, position string) ([]OffsetTarget, error) {
	if err := checkTopicGroup(topic, group); err != nil {
		return nil, err
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, err
	}
	var listed kadm.ListedOffsets
	what := fmt.Sprintf("listing offsets of topic %q on cluster %q", topic, c.Name())
	switch {
	case !at.IsZero():
		listed, err = adm.ListOffsetsAfterMilli(ctx, at.UnixMilli(), topic)
	case position == "earliest":
		listed, err = adm.ListStartOffsets(ctx, topic)
	case position == "latest":
		listed, err = adm.ListEndOffsets(ctx, topic)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "position %q: use earliest or latest", position)
	}
	if err != nil {
		return nil, kafkaErr(what, err)
	}
	var ends kadm.ListedOffsets
	if !at.IsZero() {
		// A time after the last record lists no offset: go to the end.
		if ends, err = adm.ListEndOffsets(ctx, topic); err != nil {
			return nil, kafkaErr(what, err)
		}
	}
	var targets []OffsetTarget
	for _, lo := range listed[topic] {
		if lo.Err != nil {
			if errors.Is(lo.Err, kerr.UnknownTopicOrPartition) {
				return nil, topicNotFound(topic, c)
			}
			return nil, kafkaErr(what, lo.Err)
		}
		off := lo.Offset
		if off < 0 && ends != nil {
			if e, ok := ends.Lookup(topic, lo.Partition); ok {
				off = e.Offset
			}
		}
		targets = append(targets, OffsetTarget{Partition: lo.Partition, Offset: off})
	}
	if len(targets) == 0 {
		return nil, topicNotFound(topic, c)
	}
	slices.SortFunc(targets, func(a, b OffsetTarget) int { return int(a.Partition - b.Partition) })
	return s.SetOffsets(ctx, cluster, group, topic, targets)
}

// commitAsAdmin commits offsets outside the group's generation, which
// Kafka accepts only while the group has no members.
func commitAsAdmin(ctx context.Context, adm *kadm.Client, group, topic string, targets []OffsetTarget) error {
	var os kadm.Offsets
	for _, t := range targets {
		os.Add(kadm.Offset{Topic: topic, Partition: t.Partition, At: t.Offset, LeaderEpoch: -1, Metadata: t.Metadata})
	}
	resp, err := adm.CommitOffsets(ctx, group, os)
	if err != nil {
		return err
	}
	return resp.Error()
}
