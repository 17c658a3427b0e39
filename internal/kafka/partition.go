package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// partitionKey is the context key of a record's explicit partition.
type partitionKey struct{}

// WithPartition returns a context that makes the producers write a record
// produced with it to partition p instead of the one its key picks. A
// partition the topic does not have fails the record.
func WithPartition(ctx context.Context, p int32) context.Context {
	return context.WithValue(ctx, partitionKey{}, p)
}

// explicitPartitioner is franz-go's key partitioner, overridden by a
// partition the record's context names.
type explicitPartitioner struct{ kgo.Partitioner }

func (e explicitPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &explicitTopicPartitioner{e.Partitioner.ForTopic(topic)}
}

type explicitTopicPartitioner struct{ kgo.TopicPartitioner }

func explicit(r *kgo.Record) (int32, bool) {
	if r.Context == nil {
		return 0, false
	}
	p, ok := r.Context.Value(partitionKey{}).(int32)
	return p, ok
}

// RequiresConsistency is true for an explicit partition: franz-go then
// chooses among all partitions, so the index returned is the partition.
func (t *explicitTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	if _, ok := explicit(r); ok {
		return true
	}
	return t.TopicPartitioner.RequiresConsistency(r)
}

func (t *explicitTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if p, ok := explicit(r); ok {
		return int(p)
	}
	return t.TopicPartitioner.Partition(r, n)
}

// OnNewBatch keeps the sticky partitioning of records without a key.
func (t *explicitTopicPartitioner) OnNewBatch() {
	if o, ok := t.TopicPartitioner.(kgo.TopicPartitionerOnNewBatch); ok {
		o.OnNewBatch()
	}
}
