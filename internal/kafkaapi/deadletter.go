package kafkaapi

import (
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkDeadLetterTopic refuses a group whose name makes the dead-letter
// topic (kafka_api.consume.dead_letter_topic with {group} replaced) a name
// Kafka does not allow: its messages could never be moved there.
func (s *Service) checkDeadLetterTopic(group, topic string) error {
	cc := s.Config().Consume
	if cc.MaxDeliveries <= 0 || cc.DeadLetterTopic == "" {
		return nil
	}
	dlt := deadLetterTopic(cc.DeadLetterTopic, topic, group)
	if err := CheckTopic(dlt); err != nil {
		return errorf(codes.InvalidArgument, "group %q makes the dead-letter topic (kafka_api.consume.dead_letter_topic) %s", group, status.Convert(err).Message())
	}
	return nil
}

// deadLetterTopic is the dead-letter topic of group's messages of topic.
func deadLetterTopic(pattern, topic, group string) string {
	return strings.NewReplacer("{topic}", topic, "{group}", group).Replace(pattern)
}

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
	if !ps.deadDone(rec.Offset) {
		return // acknowledged while it was being written
	}
	if err != nil {
		m.s.logger.Error("writing to the dead-letter topic failed; the message is delivered again",
			"topic", m.key.topic, "group", m.key.group, "partition", ps.partition, "offset", rec.Offset,
			"dead_letter_topic", m.cfg.deadLetterTopic, "error", err)
		ps.requeue(rec, d.deliveries-1)
		m.broadcastLocked()
		return
	}
	m.s.logger.Warn("message moved to the dead-letter topic", "topic", m.key.topic, "group", m.key.group,
		"partition", ps.partition, "offset", rec.Offset, "deliveries", d.deliveries, "dead_letter_topic", m.cfg.deadLetterTopic)
	m.counts.deadLetters.Add(1)
	m.settleLocked(ps, rec.Offset)
}
