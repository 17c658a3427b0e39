package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/kafka"
)

// resetRequest is a SetOffsets for the member's poll goroutine to apply
// between two polls; done gets its outcome.
type resetRequest struct {
	targets []OffsetTarget
	done    chan error
}

// SetOffsets commits offsets for group on topic. For a group this
// instance is a member of, it takes effect at once: the member drops what
// it had read of those partitions and reads on from the new offsets.
func (s *Service) SetOffsets(ctx context.Context, cluster, group, topic string, targets []OffsetTarget) ([]OffsetTarget, error) {
	if len(targets) == 0 {
		if err := checkTopicGroup(topic, group); err != nil {
			return nil, err
		}
		return nil, errorf(codes.InvalidArgument, "no offsets given")
	}
	adm, c, td, err := s.groupTopic(ctx, cluster, group, topic)
	if err != nil {
		return nil, err
	}
	seen := map[int32]bool{}
	for _, t := range targets {
		if _, ok := td.Partitions[t.Partition]; !ok {
			return nil, errorf(codes.InvalidArgument, "topic %q has no partition %d (it has %d)", topic, t.Partition, len(td.Partitions))
		}
		if t.Offset < 0 {
			return nil, errorf(codes.InvalidArgument, "offset %d for partition %d is negative", t.Offset, t.Partition)
		}
		if seen[t.Partition] {
			return nil, errorf(codes.InvalidArgument, "partition %d is given twice", t.Partition)
		}
		seen[t.Partition] = true
	}
	if err := checkInRange(ctx, c, topic, targets); err != nil {
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
		} else if !errors.Is(err, ErrClosing) {
			return nil, err
		}
		// The member was leaving: commit as a non-member below.
	}
	if err := commitAsAdmin(ctx, adm, group, topic, targets); err != nil {
		if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.RebalanceInProgress) {
			return nil, &Error{Code: codes.FailedPrecondition, Err: err, Msg: fmt.Sprintf(
				"group %q has active members that are not on this Ferry instance; send the request to the instance consuming topic %q in the group, or stop the group's consumers: %v", group, topic, err)}
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
func checkInRange(ctx context.Context, c *kafka.Cluster, topic string, targets []OffsetTarget) error {
	on := fmt.Sprintf("of topic %q on cluster %q", topic, c.Name())
	marks, err := c.Watermarks(ctx, topic)
	if err != nil {
		return kafkaErr("listing the offsets "+on, err)
	}
	var bad []string
	for _, t := range targets {
		mark, ok := marks[t.Partition]
		if !ok {
			return errorf(codes.Unavailable, "listing the offsets %s: partition %d missing from the answer", on, t.Partition)
		}
		if t.Offset < mark.Start || t.Offset > mark.End {
			bad = append(bad, fmt.Sprintf("offset %d of partition %d is outside %d to %d", t.Offset, t.Partition, mark.Start, mark.End))
		}
	}
	if len(bad) > 0 {
		return errorf(codes.InvalidArgument,
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
	return errorf(codes.FailedPrecondition,
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
		return closing("the group member is leaving")
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
		return contextError(ctx.Err())
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
		ps.reset(t)
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
		if ps := m.parts[t.Partition]; ps != nil && ps.next == t.Offset && ps.unsettled.Len() == 0 {
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
	if err := s.allowOffsets(ctx, group, topic); err != nil {
		return nil, err
	}
	_, c, err := s.admin(cluster) // refuses while Ferry is shutting down
	if err != nil {
		return nil, err
	}
	var pos kafka.Position
	switch {
	case !at.IsZero():
		pos = kafka.AtOrAfter(at)
	case position == "earliest":
		pos = kafka.AtStart()
	case position == "latest":
		pos = kafka.AtEnd()
	default:
		return nil, errorf(codes.InvalidArgument, "position %q: use earliest or latest", position)
	}
	offs, err := c.ListOffsets(ctx, topic, pos)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil, topicNotFound(topic, c)
	}
	if err != nil {
		return nil, kafkaErr(fmt.Sprintf("listing offsets of topic %q on cluster %q", topic, c.Name()), err)
	}
	targets := make([]OffsetTarget, 0, len(offs))
	for p, off := range offs {
		targets = append(targets, OffsetTarget{Partition: p, Offset: off})
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
