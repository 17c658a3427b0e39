package ferryapi

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
)

// The benchmarks compare the Kafka API with franz-go used directly, for
// 100-byte records:
//
//	go test -run '^$' -bench . -benchtime 200000x ./internal/kafkaapi/ferryapi
//	FERRY_TEST_BROKERS=127.0.0.1:19092 go test -run '^$' -bench . -benchtime 200000x ./internal/kafkaapi/ferryapi
//
// Each reports records/s; b.N is the number of records.

var benchValue = make([]byte, 100)

func BenchmarkProduceStream(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	topic := newTopic(b, 3)
	stream, err := e.client.ProduceStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	go func() {
		req := &kafkav1.ProduceRequest{Topic: topic, Value: &kafkav1.ProduceRequest_ValueBytes{ValueBytes: benchValue}}
		for range b.N {
			if stream.Send(req) != nil {
				return
			}
		}
		_ = stream.CloseSend()
	}()
	for i := range b.N {
		res, err := stream.Recv()
		if err != nil || res.GetCode() != 0 {
			b.Fatalf("result %d: %v %v", i, res, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkProduceDirect(b *testing.B) {
	leakCheck(b)
	topic := newTopic(b, 3)
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers...), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(100_000),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	wg.Add(b.N)
	for range b.N {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: benchValue}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// fill writes n records for the consume benchmarks, untimed.
func fill(b testing.TB, topic string, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers...), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	for range n {
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Value: benchValue}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkConsume(b *testing.B) {
	e := newEnv(b)
	topic, group := newTopic(b, 3), uniqueName(b, "group")
	fill(b, topic, b.N)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	stream, err := e.client.Consume(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// Credits and acks go in batches, as a throughput-minded client sends
	// them; fewer than consume.max_unacked_per_partition, or a partition
	// stops delivering before the batch is full.
	const batch = 100
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 10 * batch}); err != nil {
		b.Fatal(err)
	}
	ack := &kafkav1.ConsumeRequest{Credits: batch}
	for i := range b.N {
		resp, err := stream.Recv()
		if err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
		ack.Acks = append(ack.Acks, ref(resp.GetMessage()))
		if len(ack.Acks) == batch {
			if err := stream.Send(ack); err != nil {
				b.Fatal(err)
			}
			ack.Acks = ack.Acks[:0]
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkConsumeDirect(b *testing.B) {
	leakCheck(b)
	topic, group := newTopic(b, 3), uniqueName(b, "group")
	fill(b, topic, b.N)
	b.ResetTimer()
	start := time.Now()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBrokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for n := 0; n < b.N; {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		n += fs.NumRecords()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// floorServer answers ProduceStream and Consume without Kafka: the cost of
// the API's gRPC messages alone, the ceiling for the Kafka API.
type floorServer struct {
	kafkav1.UnimplementedKafkaServer
}

func (floorServer) ProduceStream(stream kafkav1.Kafka_ProduceStreamServer) error {
	req := new(kafkav1.ProduceRequest)
	res := new(kafkav1.ProduceResult)
	for seq := int64(0); ; seq++ {
		if err := stream.RecvMsg(req); err != nil {
			return nil
		}
		res.Sequence, res.Offset = seq, seq
		if err := stream.Send(res); err != nil {
			return err
		}
	}
}

func (floorServer) Consume(stream kafkav1.Kafka_ConsumeServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	for off := int64(0); ; off++ {
		m := &kafkav1.Message{Topic: "floor", Partition: int32(off % 3), Offset: off, Value: &kafkav1.Message_ValueBytes{ValueBytes: benchValue}, Deliveries: 1}
		if err := stream.Send(&kafkav1.ConsumeResponse{Message: m}); err != nil {
			return nil
		}
	}
}

func floorClient(b *testing.B) kafkav1.KafkaClient {
	gs := ferryGRPC(func(gs *grpc.Server) { kafkav1.RegisterKafkaServer(gs, floorServer{}) })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(); gs.Stop() })
	return kafkav1.NewKafkaClient(conn)
}

func BenchmarkProduceStreamFloor(b *testing.B) {
	client := floorClient(b)
	stream, err := client.ProduceStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	go func() {
		req := &kafkav1.ProduceRequest{Topic: "floor", Value: &kafkav1.ProduceRequest_ValueBytes{ValueBytes: benchValue}}
		for range b.N {
			if stream.Send(req) != nil {
				return
			}
		}
		_ = stream.CloseSend()
	}()
	for i := range b.N {
		if _, err := stream.Recv(); err != nil {
			b.Fatalf("result %d: %v", i, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkConsumeFloor(b *testing.B) {
	client := floorClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Consume(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: "floor", Group: "floor"}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := stream.Recv(); err != nil {
			b.Fatalf("message %d: %v", i, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
