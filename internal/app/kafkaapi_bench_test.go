package app_test

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/grpcserver"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// produceBatch is how many records the ProduceStream benchmark sends per
// request.
const produceBatch = 100

// reportLatencies reports p50 and p99 of lat, the rate of n records since
// start, and the process's CPU time per record since cpu0 (processCPU):
// with the embedded broker that is the load generator's, Ferry's and the
// broker's work together.
func reportLatencies(b *testing.B, lat []time.Duration, n int, start time.Time, cpu0 time.Duration, unit string) {
	elapsed := time.Since(start)
	if cpu := processCPU(); cpu > 0 {
		b.ReportMetric(float64((cpu-cpu0).Nanoseconds())/float64(n), "cpu-ns/record")
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), unit)
}

// BenchmarkKafkaAPIProduceStream writes b.N records as fast as one stream
// takes them: through Ferry's ProduceStream (one result per record, in
// order), and directly with one franz-go client producing asynchronously to
// the same broker. Latency is from handing a record over to learning its
// offset.
//
// Run: go test ./internal/app -run '^$' -bench KafkaAPIProduceStream -benchtime 200000x
// (FERRY_TEST_BROKERS=host:port for a real broker).
func BenchmarkKafkaAPIProduceStream(b *testing.B) {
	for _, size := range []int{100, 1024} {
		// Random bytes: zeros would compress to nothing, and both paths
		// write uncompressed, as Ferry's producer does by default.
		value := make([]byte, size)
		_, _ = crand.Read(value)
		b.Run(fmt.Sprintf("direct/%dB", size), func(b *testing.B) {
			topic := kit.Topic(b, 3, nil)
			cl := kit.Client(b, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			lat := make([]time.Duration, b.N)
			ctx := context.Background()
			b.ResetTimer()
			start, cpu0 := time.Now(), processCPU()
			for i := range b.N {
				t0 := time.Now()
				cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
					if err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(t0)
				})
			}
			if err := cl.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			reportLatencies(b, lat, b.N, start, cpu0, "records/s")
		})
		for _, path := range []string{"grpc-floor", "ferry"} {
			b.Run(fmt.Sprintf("%s/%dB", path, size), func(b *testing.B) {
				addr := floorAddr(b)
				topic := "floor"
				if path == "ferry" {
					topic = kit.Topic(b, 3, nil)
					addr = startKafkaAPI(b, "").GRPCAddr()
				}
				produceStreamLoad(b, addr, topic, value)
			})
		}
	}
}

// produceStreamLoad writes b.N records through one ProduceStream to addr,
// produceBatch per request, and reports rate and latencies.
func produceStreamLoad(b *testing.B, addr, topic string, value []byte) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := kafkav1.NewKafkaClient(dialAddr(b, addr)).ProduceStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	sent := make([]time.Time, b.N)
	lat := make([]time.Duration, b.N)
	recvDone := make(chan error, 1)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	go func() {
		i := 0
		for i < b.N {
			resp, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			now := time.Now()
			for _, r := range resp.Results {
				if r.Code != 0 || r.Sequence != int64(i) {
					recvDone <- fmt.Errorf("result %d: %v", i, r)
					return
				}
				lat[i] = now.Sub(sent[i])
				i++
			}
		}
		recvDone <- nil
	}()
	// Requests of up to produceBatch records, as a client that
	// streams records sends them: whatever it has, at once.
	rec := &kafkav1.ProduceRequest{Topic: topic, ValueBytes: value}
	batch := make([]*kafkav1.ProduceRequest, produceBatch)
	for i := range batch {
		batch[i] = rec
	}
	for i := 0; i < b.N; i += produceBatch {
		n := min(produceBatch, b.N-i)
		now := time.Now()
		for j := range n {
			sent[i+j] = now
		}
		if err := stream.Send(&kafkav1.ProduceStreamRequest{Records: batch[:n]}); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-recvDone; err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, lat, b.N, start, cpu0, "records/s")
	_ = stream.CloseSend()
}

// floorServer answers Produce, ProduceStream and Consume at once, without Kafka:
// what the Kafka API's gRPC messages cost alone, the ceiling for Ferry.
type floorServer struct {
	kafkav1.UnimplementedKafkaServer
}

func (floorServer) Produce(context.Context, *kafkav1.ProduceRequest) (*kafkav1.ProduceResponse, error) {
	return &kafkav1.ProduceResponse{}, nil
}

func (floorServer) ProduceStream(stream kafkav1.Kafka_ProduceStreamServer) error {
	var seq int64
	req, resp := new(kafkav1.ProduceStreamRequest), new(kafkav1.ProduceStreamResponse)
	var results []kafkav1.ProduceResult // reused, as Ferry reuses its own
	for {
		if err := stream.RecvMsg(req); err != nil {
			return nil
		}
		if len(results) < len(req.Records) {
			results = make([]kafkav1.ProduceResult, len(req.Records))
		}
		resp.Results = resp.Results[:0]
		for i := range req.Records {
			r := &results[i]
			r.Sequence, r.Offset = seq, seq
			resp.Results = append(resp.Results, r)
			seq++
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Consume sends messages with a timestamp as fast as credits allow, up to
// 256 per response and within 32 KiB, like Ferry. Their values are as long
// as the topic's name says: "floor-1024" gets 1,024 bytes.
func (floorServer) Consume(stream kafkav1.Kafka_ConsumeServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	size, err := strconv.Atoi(strings.TrimPrefix(first.GetTopic(), "floor-"))
	if err != nil {
		return err
	}
	credits := make(chan int32, 1024)
	credits <- first.Credits
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(credits)
				return
			}
			credits <- r.Credits
		}
	}()
	value := make([]byte, size)
	ts := timestamppb.Now() // records carry one, so Ferry's messages do
	var off int64
	resp := new(kafkav1.ConsumeResponse)
	// Reused from one response to the next, as Ferry reuses its own.
	msgs := make([]kafkav1.Message, 256)
	var have int32
	for {
		if have == 0 {
			c, ok := <-credits
			if !ok {
				return nil
			}
			have += c
			continue
		}
		resp.Messages = resp.Messages[:0]
		for size, n := 0, min(have, 256); n > 0 && size < 32<<10-512; n-- {
			m := &msgs[len(resp.Messages)]
			m.Topic, m.Partition, m.Offset = first.GetTopic(), int32(off%3), off
			m.ValueBytes, m.Timestamp, m.Deliveries = value, ts, 1
			if size += proto.Size(m) + 3; size > 32<<10-512 && len(resp.Messages) > 0 {
				break
			}
			resp.Messages = append(resp.Messages, m)
			off++
		}
		have -= int32(len(resp.Messages))
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

// floorAddr serves floorServer from Ferry's own gRPC server (its codec and
// buffer pool) on a loopback port for the benchmark.
func floorAddr(b *testing.B) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpcserver.New(grpcserver.Options{
		MaxRecvMessageSize: 4 << 20,
		ShutdownTimeout:    time.Second,
		Logger:             testLogger(b),
		Services:           []grpcserver.Service{{Desc: &kafkav1.Kafka_ServiceDesc, Impl: floorServer{}}},
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	b.Cleanup(func() { _ = srv.Close(context.Background()); <-done })
	return lis.Addr().String()
}

// produceBacklog writes n records of size bytes to topic, each value
// starting with its write time.
func produceBacklog(b *testing.B, topic string, n, size int) {
	cl := kit.Client(b, kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx := context.Background()
	for range n {
		v := make([]byte, size)
		_, _ = crand.Read(v)
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkKafkaAPIConsumeStream reads a backlog of b.N records (100 B or
// 1 KB) in a new consumer group: through Ferry's Consume stream (granting
// credits and acknowledging every message in batches), and directly with a
// franz-go group consumer that commits as it goes. The latency is the time
// from the start of the read to each record's arrival, so p50 is where half
// the backlog was read; throughput is records read per second.
//
// Run: go test ./internal/app -run '^$' -bench KafkaAPIConsumeStream -benchtime 200000x
func BenchmarkKafkaAPIConsumeStream(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(fmt.Sprintf("direct/%dB", size), func(b *testing.B) { consumeDirect(b, size) })
		for _, path := range []string{"grpc-floor", "ferry"} {
			b.Run(fmt.Sprintf("%s/%dB", path, size), func(b *testing.B) {
				addr, topic := floorAddr(b), fmt.Sprintf("floor-%d", size)
				if path == "ferry" {
					topic = kit.Topic(b, 3, nil)
					produceBacklog(b, topic, b.N, size)
					addr = startKafkaAPI(b, "    max_unacked_per_partition: 20000\n    max_buffered_per_partition: 20000\n").GRPCAddr()
				}
				consumeStreamLoad(b, addr, topic)
			})
		}
	}
}

// consumeDirect reads a backlog of b.N records of size bytes with a
// franz-go group consumer.
func consumeDirect(b *testing.B, size int) {
	topic := kit.Topic(b, 3, nil)
	produceBacklog(b, topic, b.N, size)
	cl := kit.Client(b, kgo.ConsumeTopics(topic), kgo.ConsumerGroup("g-"+topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitInterval(500*time.Millisecond))
	ctx := testkit.Context(b, 5*time.Minute)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for len(lat) < b.N {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		now := time.Since(start)
		for range fs.NumRecords() {
			lat = append(lat, now)
		}
	}
	reportLatencies(b, lat, b.N, start, cpu0, "records/s")
}

// consumeStreamLoad reads b.N messages from one Consume stream on addr,
// granting credits and acknowledging in batches.
func consumeStreamLoad(b *testing.B, addr, topic string) {
	ctx := testkit.Context(b, 5*time.Minute)
	stream, err := kafkav1.NewKafkaClient(dialAddr(b, addr)).Consume(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const window = 16384
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: "g-" + topic, Credits: window}); err != nil {
		b.Fatal(err)
	}
	var acks []*kafkav1.MessageRef
	for len(lat) < b.N {
		r, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		now := time.Since(start)
		for _, m := range r.Messages {
			lat = append(lat, now)
			acks = append(acks, &kafkav1.MessageRef{Partition: m.Partition, Offset: m.Offset})
		}
		if len(acks) >= window/4 {
			if err := stream.Send(&kafkav1.ConsumeRequest{Credits: int32(len(acks)), Acks: acks}); err != nil {
				b.Fatal(err)
			}
			acks = nil
		}
	}
	reportLatencies(b, lat, b.N, start, cpu0, "records/s")
	_ = stream.CloseSend()
}

// BenchmarkKafkaAPIProduceUnary is one synchronous produce at a time:
// Kafka-Pixy's Produce and Ferry's Produce through Ferry, franz-go's
// ProduceSync directly, and the gRPC round trip alone (grpc-floor). Kafka-Pixy answered a synchronous produce only
// after its producer's flush interval (500 ms by default).
//
// Run: go test ./internal/app -run '^$' -bench KafkaAPIProduceUnary -benchtime 5000x
func BenchmarkKafkaAPIProduceUnary(b *testing.B) {
	value := []byte("a small message of about one hundred bytes, as an application event would be ..............")
	b.Run("direct", func(b *testing.B) {
		topic := kit.Topic(b, 3, nil)
		cl := kit.Client(b, kgo.ProducerLinger(0))
		runLoad(b, 1, func(ctx context.Context, i int) error {
			return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: value}).FirstErr()
		})
	})
	// The gRPC round trip alone: a Produce answered at once, without Kafka.
	b.Run("grpc-floor", func(b *testing.B) {
		c := kafkav1.NewKafkaClient(dialAddr(b, floorAddr(b)))
		runLoad(b, 1, func(ctx context.Context, i int) error {
			_, err := c.Produce(ctx, &kafkav1.ProduceRequest{Topic: "floor", Key: []byte(strconv.Itoa(i)),
				ValueBytes: value})
			return err
		})
	})
	b.Run("ferry-pixy", func(b *testing.B) {
		topic := kit.Topic(b, 3, nil)
		c := kafkapixy.NewKafkaPixyClient(dialAddr(b, startKafkaAPI(b, "").GRPCAddr()))
		runLoad(b, 1, func(ctx context.Context, i int) error {
			_, err := c.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, KeyValue: []byte(strconv.Itoa(i)), Message: value})
			return err
		})
	})
	b.Run("ferry", func(b *testing.B) {
		topic := kit.Topic(b, 3, nil)
		c := kafkav1.NewKafkaClient(dialAddr(b, startKafkaAPI(b, "").GRPCAddr()))
		runLoad(b, 1, func(ctx context.Context, i int) error {
			_, err := c.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Key: []byte(strconv.Itoa(i)),
				ValueBytes: value})
			return err
		})
	})
}
