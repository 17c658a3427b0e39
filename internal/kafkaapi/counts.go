package kafkaapi

import "sync/atomic"

// Counts are what the Kafka API's consumer group members of one cluster
// did since the Service started, summed over groups and topics (which
// callers choose).
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

// counts are the atomic counters behind the Counts of a cluster. The
// Service makes one per configured cluster as it starts; a member counts
// into its cluster's.
type counts struct {
	deliveries, redeliveries, acks, deadLetters atomic.Int64
}

// newCounts returns the counters of every cluster Service s serves.
func newCounts(names []string) map[string]*counts {
	byCluster := make(map[string]*counts, len(names))
	for _, n := range names {
		byCluster[n] = &counts{}
	}
	return byCluster
}

// Counts returns what the Service's members did, by configured cluster.
func (s *Service) Counts() map[string]Counts {
	out := make(map[string]Counts, len(s.counts))
	for name, c := range s.counts {
		out[name] = Counts{
			Deliveries:   c.deliveries.Load(),
			Redeliveries: c.redeliveries.Load(),
			Acks:         c.acks.Load(),
			DeadLetters:  c.deadLetters.Load(),
		}
	}
	return out
}

// Lag is how far behind the Kafka API's members of one cluster are, over
// the partitions they own on this Ferry instance. A partition's lag is
// its high watermark at the member's last fetch less its first offset not
// acknowledged (what the member commits next): records not read yet,
// queued, and delivered but not acknowledged. A partition counts once a
// fetch returned records of it.
type Lag struct {
	// Records sums the lag of every partition.
	Records int64
	// MaxRecords is the largest lag of one member: one group's topic.
	MaxRecords int64
}

// Lag returns how far behind the Service's members are, by configured
// cluster; a cluster no member consumes from has a zero Lag.
func (s *Service) Lag() map[string]Lag {
	s.mu.Lock()
	members := make([]*member, 0, len(s.members))
	for _, m := range s.members {
		members = append(members, m)
	}
	s.mu.Unlock()
	out := make(map[string]Lag, len(s.counts))
	for name := range s.counts {
		out[name] = Lag{}
	}
	for _, m := range members {
		lag := m.lag()
		l := out[m.key.cluster]
		l.Records += lag
		l.MaxRecords = max(l.MaxRecords, lag)
		out[m.key.cluster] = l
	}
	return out
}

// lag sums the lag of the member's partitions.
func (m *member) lag() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum int64
	for _, ps := range m.parts {
		sum += ps.lag()
	}
	return sum
}

// lag is the partition's high watermark at the last fetch less its first
// unsettled offset, 0 until a fetch returned records of it.
func (ps *partState) lag() int64 {
	if ps.highWatermark < 0 || ps.next < 0 {
		return 0
	}
	return ps.unsettled.Lag(ps.highWatermark, ps.next)
}
