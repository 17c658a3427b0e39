package kafkaapi

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// BenchmarkEngineConsume reads a backlog of b.N records through a session
// (batches of 256, every message acknowledged), without any gRPC: the
// engine's own cost per message beside franz-go's.
//
// Run: go test ./internal/kafkaapi -run '^$' -bench EngineConsume -benchtime 200000x
func BenchmarkEngineConsume(b *testing.B) {
	cfg := engineConfig()
	cfg.Consume.MaxUnackedPerPartition = 20000
	cfg.Consume.MaxBufferedPerPartition = 20000
	// The topic first: cleanups run last first, so the engine stops
	// before the topic is deleted.
	topic := kit.Topic(b, 3, nil)
	s := startEngine(b, cfg)
	cl, err := kgo.NewClient(append(kit.Opts(b), kgo.ProducerLinger(0))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v := make([]byte, 100)
	for range b.N {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: v}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	ss, err := s.Open(ctx, "", testkit.Name(b, "group"), topic)
	if err != nil {
		b.Fatal(err)
	}
	defer ss.Close(true)
	var msgs []Message
	for n := 0; n < b.N; {
		msgs = ss.TakeUpTo(msgs[:0], 256, math.MaxInt)
		if len(msgs) == 0 {
			m, err := ss.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, *m)
		}
		for _, m := range msgs {
			if err := ss.Ack(m.Partition, m.Offset); err != nil {
				b.Fatal(err)
			}
		}
		n += len(msgs)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
