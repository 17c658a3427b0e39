package kafkaapi

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/sparseacks"
)

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
	counts  *counts // its cluster's

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
		return nil, closing("Ferry is shutting down")
	}
	if m := s.members[key]; m != nil {
		return m, nil
	}
	if limit := s.maxMembers(); s.live >= limit {
		return nil, errorf(codes.ResourceExhausted,
			"this Ferry instance runs %d consumer group members, its limit (kafka_api.consume.max_group_members), and consuming topic %q in group %q needs one more; "+
				"retry once an idle member left (after kafka_api.consume.subscription_timeout, %v, without use), or raise the limit",
			s.live, key.topic, key.group, s.Config().Consume.SubscriptionTimeout)
	}
	m, err := s.newMember(c, key, td.ID)
	if err != nil {
		return nil, &Error{Code: codes.Unavailable, Msg: err.Error(), Err: err}
	}
	s.members[key] = m
	s.logger.Info("joined consumer group", "cluster", key.cluster, "group", key.group, "topic", key.topic)
	return m, nil
}

// maxMembers is kafka_api.consume.max_group_members, or its default when
// a configuration built by hand left it unset.
func (s *Service) maxMembers() int {
	if n := s.Config().Consume.MaxGroupMembers; n > 0 {
		return n
	}
	return config.Default().KafkaAPI.Consume.MaxGroupMembers
}

// newMember creates the member for key, with its Kafka client, and starts
// its poll and tick goroutines; join calls it with s.mu held.
func (s *Service) newMember(c *kafka.Cluster, key memberKey, topicID [16]byte) (*member, error) {
	cc := s.Config().Consume
	m := &member{
		s:       s,
		key:     key,
		topicID: topicID,
		counts:  s.counts[key.cluster],
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
		r.done <- closing("the group member closed")
	}
	m.resets = nil
	m.mu.Unlock()
	m.s.logger.Info("left consumer group", "cluster", m.key.cluster, "group", m.key.group, "topic", m.key.topic)
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

// broadcastLocked wakes every Next call waiting: something may be
// deliverable, or the member is closing.
func (m *member) broadcastLocked() {
	close(m.wake)
	m.wake = make(chan struct{})
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
		ps := newPartState(m.key.topic, p)
		if c, ok := committed[p]; ok && c.Offset >= 0 {
			if err := ps.startAt(c.Offset, c.Metadata); err != nil {
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
	if !ps.restore(k, fetched) {
		m.s.logger.Warn("partition came back moved by another member or an offset change; the acknowledgements made here before it was lost and not committed are dropped, so those messages are delivered again",
			append(attrs, "committed", ps.committed, "kept_committed", k.committed, "commit_read", fetched)...)
		return
	}
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

// derefString is *s, or empty for nil.
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
	// Leaving the group revokes every partition: a Close that stopped
	// waiting cancels this last commit.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.s.givenUp, cancel)()
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
		if k := ps.keep(); keep && k != nil {
			if m.kept == nil {
				m.kept = map[int32]*keptAcks{}
			}
			m.kept[p] = k
		}
		ps.void()
		delete(m.parts, p)
	}
	m.syncOrderLocked()
	m.broadcastLocked()
	m.roomLocked() // a full partition may have gone
}

// syncOrderLocked rebuilds the round-robin order from the assigned
// partitions.
func (m *member) syncOrderLocked() {
	m.order = m.order[:0]
	for p := range m.parts {
		m.order = append(m.order, p)
	}
	slices.Sort(m.order)
	m.rr = 0
}
