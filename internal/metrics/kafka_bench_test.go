package metrics

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkKafkaHook is the hook's cost on one Kafka request and one
// record batch read, once its series exist.
func BenchmarkKafkaHook(b *testing.B) {
	h := New().KafkaHook("default").(*kafkaHook)
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	h.OnNewClient(cl)
	meta := kgo.BrokerMetadata{NodeID: 1, Host: "127.0.0.1", Port: 9092}
	b.Run("request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.OnBrokerE2E(meta, 0, kgo.BrokerE2E{BytesWritten: 100, BytesRead: 100})
		}
	})
	b.Run("batch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.OnFetchBatchRead(meta, "t", 0, kgo.FetchBatchMetrics{NumRecords: 1, UncompressedBytes: 100})
		}
	})
}
