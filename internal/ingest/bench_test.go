//go:build unix

package ingest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/ingest"
)

// benchWindow is the records a source has read and Kafka not yet
// acknowledged: sources[].max_in_flight's default, which the direct
// franz-go path keeps too.
const benchWindow = 1000

// BenchmarkIngest measures a source's throughput (records Kafka
// acknowledged per second, and the process's CPU time per record) against
// its two halves done alone on the same machine, and both done by a
// hand-written loop:
//
//   - grpc-read: a plain grpc-go client reads the same ticker's stream as
//     raw frames, as a source does, and discards every message;
//   - franz-go: a franz-go producer with the options of Ferry's producer
//     (idempotent, acks all, linger 0, no compression) writes pre-built
//     records of the same value and header count to a fresh topic, at
//     most benchWindow unacknowledged at once, and waits for every ack;
//   - bridge: the shortest hand-written bridge, one loop that reads a
//     tick and produces it with the franz-go producer above, the same
//     window and headers: what Ferry's source does, without Ferry;
//   - ferry: Ferry runs in-process with one source (protobuf value, no
//     key, no cursor) reading the ticker as fast as Kafka acknowledges.
//
// One op is one message. The ferry sub-benchmark reports, when the others
// ran before it in the same process and it wrote at least minCompared
// records, its throughput's ratio to the lower of grpc-read and franz-go
// ("ratio"; the feature's target is at least 0.8) and to bridge
// ("bridge-ratio"), and the CPU time of grpc-read and franz-go together
// over its own ("cpu-ratio").
//
// The ticker runs in a process of its own, so CPU per message counts the
// client side only: the reader, the producer, the bridge or Ferry, and on
// the embedded broker the broker too.
//
// Run: go test ./internal/ingest -run '^$' -bench Ingest -benchtime 2s -count 3
// (FERRY_TEST_BROKERS=host:port for a real broker). With -count, ratios
// compare with the latest run of the other paths; docs/BENCHMARKS.md
// compares medians.
func BenchmarkIngest(b *testing.B) {
	for _, size := range []int{100, 1000} {
		payload := payloadFor(size)
		value := tickBytes(b, payload)
		name := fmt.Sprintf("%dB", size)
		var grpcRead, franz, bridge result
		b.Run(name+"/grpc-read", func(b *testing.B) {
			addr := startBenchTicker(b)
			grpcRead = benchGRPCRead(b, addr, payload)
		})
		b.Run(name+"/franz-go", func(b *testing.B) {
			franz = benchFranz(b, value)
		})
		b.Run(name+"/bridge", func(b *testing.B) {
			addr := startBenchTicker(b)
			bridge = benchBridge(b, addr, payload)
		})
		b.Run(name+"/ferry", func(b *testing.B) {
			addr := startBenchTicker(b)
			r := benchFerry(b, addr, payload)
			// A few records say nothing of a rate: -benchtime 2x runs
			// the code, not the comparison.
			if low := min(grpcRead.rate, franz.rate); low > 0 && b.N >= minCompared {
				b.ReportMetric(r.rate/low, "ratio")
				b.ReportMetric((grpcRead.cpu+franz.cpu)/r.cpu, "cpu-ratio")
			}
			if bridge.rate > 0 && b.N >= minCompared {
				b.ReportMetric(r.rate/bridge.rate, "bridge-ratio")
			}
		})
	}
}

// minCompared is the fewest messages whose rate the ferry sub-benchmark
// compares with the others'.
const minCompared = 10_000

// result is what one sub-benchmark measured: messages per second and CPU
// microseconds per message.
type result struct{ rate, cpu float64 }

// payloadFor returns the payload_size that makes an encoded tick size
// bytes long, or as near as a varint length allows.
func payloadFor(size int) int32 {
	var s tick.Server
	for p := int32(0); p < int32(size); p++ {
		t := s.Tick(1_000_000)
		t.Payload = make([]byte, p)
		if proto.Size(t) >= size {
			return p
		}
	}
	return int32(size)
}

// tickBytes is an encoded tick with a payload of n bytes.
func tickBytes(b *testing.B, n int32) []byte {
	var s tick.Server
	t := s.Tick(1_000_000)
	t.Payload = make([]byte, n)
	v, err := proto.Marshal(t)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// tickerEnv, set in the environment of the test binary, makes it the
// benchmark's ticker server instead of running tests (see init).
const tickerEnv = "FERRY_BENCH_TICKER"

// init serves the example's plain ticker when the test binary runs as the
// benchmark's ticker process: it prints its address and serves until its
// standard input closes, when the benchmark ends or dies.
func init() {
	if os.Getenv(tickerEnv) != "1" {
		return
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	tick.RegisterTickerServer(srv, &tick.Server{})
	go srv.Serve(lis)
	fmt.Println(lis.Addr())
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startBenchTicker runs the example's plain ticker in a process of its
// own, so that the benchmark's CPU time is the client side's alone (the
// reader, the producer or Ferry), and returns its address.
func startBenchTicker(b *testing.B) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), tickerEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("starting the ticker process: %v", err)
	}
	return strings.TrimSpace(addr)
}

// measure is the wall and CPU time of b.N messages.
type measure struct {
	start time.Time
	cpu   time.Duration
}

func begin(b *testing.B) measure {
	b.ResetTimer()
	return measure{start: time.Now(), cpu: processCPU()}
}

// end stops the timer, and reports and returns msgs/s and CPU-µs/msg.
func (m measure) end(b *testing.B) result {
	elapsed, cpu := time.Since(m.start), processCPU()-m.cpu
	b.StopTimer()
	r := result{rate: float64(b.N) / elapsed.Seconds(), cpu: float64(cpu.Nanoseconds()) / 1e3 / float64(b.N)}
	b.ReportMetric(r.rate, "msgs/s")
	b.ReportMetric(r.cpu, "CPU-µs/msg")
	return r
}

// openTicks opens the ticker's stream at addr, ticks of payload bytes as
// fast as the caller reads, read as raw frames as a source reads them, and
// reads a few to warm up the connection and gRPC's flow control window.
func openTicks(b *testing.B, addr string, payload int32) grpc.ClientStream {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frame.Codec{})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	req, err := proto.Marshal(&tick.TicksRequest{Start: 1, IntervalMs: -1, PayloadSize: payload})
	if err != nil {
		b.Fatal(err)
	}
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/example.ingest.Ticker/Ticks")
	if err != nil {
		b.Fatal(err)
	}
	if err := cs.SendMsg(&frame.Frame{Bytes: req}); err != nil {
		b.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		b.Fatal(err)
	}
	for range 100 {
		var f frame.Frame
		if err := cs.RecvMsg(&f); err != nil {
			b.Fatal(err)
		}
	}
	return cs
}

// benchGRPCRead reads b.N ticks of payload bytes from the ticker at addr
// and discards them.
func benchGRPCRead(b *testing.B, addr string, payload int32) result {
	cs := openTicks(b, addr, payload)
	m := begin(b)
	for range b.N {
		var f frame.Frame
		if err := cs.RecvMsg(&f); err != nil {
			b.Fatal(err)
		}
	}
	return m.end(b)
}

// producer is a franz-go producer configured as Ferry's is (idempotent,
// acks all, linger 0, no compression, the same buffer and batch limits),
// writing to a fresh topic, with at most benchWindow records
// unacknowledged.
type producer struct {
	cl    *kgo.Client
	slots chan struct{}
	wg    sync.WaitGroup

	mu     sync.Mutex
	failed error
}

func newProducer(b *testing.B) *producer {
	topic := kit.Topic(b, 1, nil)
	cl := kit.Client(b,
		kgo.ProducerLinger(0),
		kgo.MaxBufferedRecords(100_000),
		kgo.RecordDeliveryTimeout(30*time.Second),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(int32(config.DefaultMaxRecvMessageSize+config.RecordOverhead)),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic(topic),
	)
	// Warm up the connection and the producer ID.
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("warm-up")}).FirstErr(); err != nil {
		b.Fatal(err)
	}
	return &producer{cl: cl, slots: make(chan struct{}, benchWindow)}
}

// acquire waits for room in the window.
func (p *producer) acquire() { p.slots <- struct{}{} }

// produce writes r, whose room in the window was acquired; done, when not
// nil, gets r back once Kafka answered.
func (p *producer) produce(r *kgo.Record, done func(*kgo.Record)) {
	p.wg.Add(1)
	p.cl.Produce(context.Background(), r, func(r *kgo.Record, err error) {
		if err != nil {
			p.mu.Lock()
			p.failed = err
			p.mu.Unlock()
		}
		<-p.slots
		if done != nil {
			done(r)
		}
		p.wg.Done()
	})
}

// wait waits until Kafka answered for every record, and fails b if it
// refused one.
func (p *producer) wait(b *testing.B) {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		b.Fatal(p.failed)
	}
}

// benchHeaders are the headers of a source's record (ferry-source and
// ferry-method).
func benchHeaders() []kgo.RecordHeader {
	return []kgo.RecordHeader{
		{Key: ingest.HeaderSource, Value: []byte("bench")},
		{Key: ingest.HeaderMethod, Value: []byte("example.ingest.Ticker/Ticks")},
	}
}

// benchFranz produces b.N records of value, each with the headers of a
// source's record.
func benchFranz(b *testing.B, value []byte) result {
	p := newProducer(b)
	// The window's records, built beforehand: a record goes back to free
	// once Kafka answered for it, and is produced again.
	free := make(chan *kgo.Record, benchWindow)
	for range benchWindow {
		free <- &kgo.Record{Value: value, Headers: benchHeaders()}
	}
	back := func(r *kgo.Record) { free <- r }
	m := begin(b)
	for range b.N {
		p.acquire()
		r := <-free
		r.Timestamp = time.Now()
		p.produce(r, back)
	}
	p.wait(b)
	return m.end(b)
}

// benchBridge is the shortest hand-written bridge: one loop that reads a
// tick from the ticker at addr and produces it, as a source does, with the
// same window.
func benchBridge(b *testing.B, addr string, payload int32) result {
	cs := openTicks(b, addr, payload)
	p := newProducer(b)
	m := begin(b)
	for range b.N {
		p.acquire()
		var f frame.Frame
		if err := cs.RecvMsg(&f); err != nil {
			b.Fatal(err)
		}
		p.produce(&kgo.Record{Value: f.Bytes, Headers: benchHeaders(), Timestamp: time.Now()}, nil)
	}
	p.wait(b)
	return m.end(b)
}

// benchFerry starts Ferry with one source reading the ticker at addr, and
// measures the time Kafka takes to acknowledge b.N of its records once the
// source runs.
func benchFerry(b *testing.B, addr string, payload int32) result {
	topic := kit.Topic(b, 1, nil)
	a := startQuietFerry(b, ferryYAML(b, uniq(b, "g"), fmt.Sprintf(`
  - name: bench
    target: %s
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: -1, payload_size: %d}
    topic: %s
`, addr, payload, topic)))
	waitState(b, a, "bench", ingest.StateRunning, 60*time.Second)
	// Warm up: the first records carry the producer's connection and ID.
	base := waitRecords(b, a, 100)
	m := begin(b)
	waitRecords(b, a, base+uint64(b.N))
	return m.end(b)
}

// startQuietFerry starts Ferry with the YAML, logging nothing, and closes
// it when the benchmark ends.
func startQuietFerry(b *testing.B, y string) *app.App {
	cfg, err := config.Parse(filepath.Join(b.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		b.Fatalf("config:\n%s\n%v", y, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a
}

// waitRecords waits until Kafka acknowledged at least n records of the
// source and returns how many it did.
func waitRecords(b *testing.B, a *app.App, n uint64) uint64 {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		for _, st := range a.SourceStatus() {
			if st.Name != "bench" {
				continue
			}
			if st.State == ingest.StateStopped {
				b.Fatalf("source stopped: %s", st.Reason)
			}
			if st.Records >= n {
				return st.Records
			}
		}
		time.Sleep(time.Millisecond)
	}
	b.Fatalf("the source did not write %d records in 5 minutes", n)
	return 0
}

// processCPU is the CPU time, user and system, the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
