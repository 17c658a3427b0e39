package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

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
		target OffsetTarget
	}
	var entries []entry
	m.mu.Lock()
	for p, ps := range m.parts {
		if only != nil && !slices.Contains(only, p) {
			continue
		}
		if t, ok := ps.toCommit(); ok {
			entries = append(entries, entry{ps, ps.gen, t})
		}
	}
	m.mu.Unlock()
	if len(entries) == 0 {
		return nil
	}
	offsets := make([]OffsetTarget, len(entries))
	for i, e := range entries {
		offsets[i] = e.target
	}
	err := m.commitOffsets(ctx, offsets)
	m.mu.Lock()
	for _, e := range entries {
		if e.ps.gen == e.gen { // else reset or reassigned meanwhile
			e.ps.committedAt(e.target, err)
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
