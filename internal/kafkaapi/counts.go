package kafkaapi

import "sync/atomic"

// Counts are what the Kafka API's consumer group members did since the
// Service started, summed over clusters, groups and topics (which callers
// choose).
type Counts struct {
	// Deliveries counts messages delivered to callers, again ones
	// included.
	Deliveries int64
	// Redeliveries counts the deliveries of messages delivered before:
	// not acknowledged within ack_timeout, handed back, or left by a
	// stream or member that ended.
	Redeliveries int64
	// Acks counts the acknowledgements that settled a message.
	Acks int64
	// DeadLetters counts the messages written to their dead-letter topic.
	DeadLetters int64
}

// counts are the atomic counters behind Counts.
type counts struct {
	deliveries, redeliveries, acks, deadLetters atomic.Int64
}

// Counts returns what the Service's members did.
func (s *Service) Counts() Counts {
	c := &s.counts
	return Counts{
		Deliveries:   c.deliveries.Load(),
		Redeliveries: c.redeliveries.Load(),
		Acks:         c.acks.Load(),
		DeadLetters:  c.deadLetters.Load(),
	}
}
