package kafkaapi

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one record to produce.
type Record struct {
	// Key is the record key; nil is no key (the partitioner spreads such
	// records), non-nil (even empty) is hashed like Kafka's Java client.
	Key []byte
	// Value is the record value; nil is a null value.
	Value   []byte
	Headers []kgo.RecordHeader
	// Partition, when non-negative, is written to instead of the one the
	// key picks.
	Partition int32
	// Timestamp is the record time; zero is the time of producing.
	Timestamp time.Time
}

// Result is where a produced record was written.
type Result struct {
	Partition int32
	Offset    int64
	Timestamp time.Time
}

// Message is one consumed record as delivered to a client.
type Message struct {
	Topic     string
	Partition int32
	Offset    int64
	// Key is nil when the record has none.
	Key []byte
	// Value is nil when the record's value is null.
	Value     []byte
	Headers   []kgo.RecordHeader
	Timestamp time.Time
	// Deliveries counts this message's deliveries, this one included.
	Deliveries int
}

// Size estimates the bytes m takes in a response: its topic, key, value
// and headers, and a fixed allowance for its numbers and framing. Streams
// use it to keep responses within a size.
func (m *Message) Size() int {
	return sizeOf(m.Topic, m.Key, m.Value, m.Headers)
}

// recordSize is a read record's Size as a Message.
func recordSize(r *kgo.Record) int {
	return sizeOf(r.Topic, r.Key, r.Value, r.Headers)
}

// messageOverhead is Size's allowance for a message's numbers, timestamp
// and field tags; headerOverhead is the same per header.
const messageOverhead, headerOverhead = 48, 8

func sizeOf(topic string, key, value []byte, headers []kgo.RecordHeader) int {
	n := messageOverhead + len(topic) + len(key) + len(value)
	for _, h := range headers {
		n += headerOverhead + len(h.Key) + len(h.Value)
	}
	return n
}

// Ref names a delivered message.
type Ref struct {
	Partition int32
	Offset    int64
}

// RefError is why a Ref could not be acknowledged.
type RefError struct {
	Ref
	Err error
}

// PartitionOffsets describes one partition of a topic for a group.
type PartitionOffsets struct {
	Partition int32
	// Begin is the log's first offset, End the next offset to be written.
	Begin, End int64
	// Committed is the group's committed offset, -1 when it has none.
	Committed int64
	// Lag is End - Committed, or End - Begin without a commit.
	Lag int64
	// Metadata is the commit's metadata as stored.
	Metadata string
	// SparseAcks are acknowledged offsets beyond Committed in human form,
	// "from-to" ranges (to exclusive) separated by commas.
	SparseAcks string
}

// OffsetTarget is an offset to commit for a partition.
type OffsetTarget struct {
	Partition int32
	Offset    int64
	// Metadata is stored with the commit; Kafka-Pixy's sparse-ack encoding
	// in it is read back as acknowledged offsets.
	Metadata string
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Topic      string
	Partitions []PartitionInfo
	// Configs are set only when asked for.
	Configs []ConfigEntry
}

// PartitionInfo is a partition's replica placement.
type PartitionInfo struct {
	Partition int32
	Leader    int32
	Replicas  []int32
	ISR       []int32
}

// ConfigEntry is one topic configuration value.
type ConfigEntry struct {
	Name, Value string
	// Source is Kafka's name for where the value comes from, such as
	// DYNAMIC_TOPIC_CONFIG (set on the topic) or DEFAULT_CONFIG.
	Source string
}

// GroupInfo describes a consumer group.
type GroupInfo struct {
	Group    string
	State    string
	Protocol string
	Members  []MemberInfo
}

// MemberInfo is one member of a group and the partitions it was assigned.
type MemberInfo struct {
	MemberID   string
	ClientID   string
	ClientHost string
	// Assigned maps a topic to the member's partitions of it, ascending.
	Assigned map[string][]int32
}
