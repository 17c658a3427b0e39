package kafkaapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/kafka"
)

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
				m.fatal = &Error{Code: codes.PermissionDenied, Err: err,
					Msg: fmt.Sprintf("consuming topic %q in group %q: %v", m.key.topic, m.key.group, err)}
				m.broadcastLocked()
				m.mu.Unlock()
			}
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		m.mu.Lock()
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if ps := m.parts[fp.Partition]; ps != nil && fp.Err == nil && len(fp.Records) > 0 {
				ps.highWatermark = fp.HighWatermark
			}
		})
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
