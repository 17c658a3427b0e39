package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/grpcserver"
)

// BenchmarkUnary compares one unary request/reply through Ferry with the
// same request/reply done directly with franz-go against the same broker.
//
// Both use the echo layout (the reply topic is the request topic), so no
// back end sits in the path and the difference is what Ferry adds: the gRPC
// hop, routing, header layout and reply correlation. The direct path
// produces the request record and its null terminator with one franz-go
// producer and waits until one franz-go reader of the topic saw the null
// record, routing by key exactly as Ferry's reply reader does.
//
// Run: go test ./internal/app -run '^$' -bench Unary -benchtime 5000x
// (FERRY_TEST_BROKERS=host:port for a real broker).
func BenchmarkUnary(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		b.Run("grpc-floor/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			cc := grpcFloor(b)
			req := echo("benchmark payload of a typical small request")
			runLoad(b, inflight, func(ctx context.Context, _ int) error {
				var resp []byte
				return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
			})
		})
		b.Run("direct/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			topic := kit.Topic(b, 1, nil)
			d := newDirect(b, topic)
			runLoad(b, inflight, func(ctx context.Context, i int) error { return d.call(ctx, i) })
		})
		b.Run("ferry/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			topic := kit.Topic(b, 1, nil)
			a := startFerry(b, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 30s}
`, topic, topic))
			cc := dial(b, a)
			req := echo("benchmark payload of a typical small request")
			runLoad(b, inflight, func(ctx context.Context, _ int) error {
				var resp []byte
				return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
			})
		})
	}
}

// runLoad runs b.N calls spread over inflight goroutines and reports the
// p50 and p99 round trip and the throughput.
func runLoad(b *testing.B, inflight int, op func(ctx context.Context, i int) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Warm up connections, metadata and the reply reader.
	for i := 0; i < 10; i++ {
		if err := op(ctx, -1-i); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := op(ctx, i); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")

}

// direct is request/reply over Kafka with franz-go alone.
type direct struct {
	topic string
	prod  *kgo.Client
	mu    sync.Mutex
	wait  map[string]chan struct{}
	done  chan struct{}
}

func newDirect(b *testing.B, topic string) *direct {
	d := &direct{
		topic: topic,
		prod:  kit.Client(b, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil))),
		wait:  map[string]chan struct{}{},
		done:  make(chan struct{}),
	}
	// Start at a timestamp, as Ferry's reply reader does: "the end" would
	// be resolved lazily and could land after the first request.
	cons := kit.Client(b, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())),
		kgo.FetchMaxWait(500*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); <-d.done })
	go func() {
		defer close(d.done)
		for {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Value != nil {
					return
				}
				d.mu.Lock()
				ch := d.wait[string(r.Key)]
				delete(d.wait, string(r.Key))
				d.mu.Unlock()
				if ch != nil {
					close(ch)
				}
			})
		}
	}()
	// Wait until the reader is positioned and reading: send probes until
	// one comes back.
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.call(ctx, -1000-i)
		cancel()
		if err == nil {
			break
		}
		if i == 30 {
			b.Fatalf("the direct reader of %s never saw a probe: %v", topic, err)
		}
	}
	return d
}

var payload = echo("benchmark payload of a typical small request")

func (d *direct) call(ctx context.Context, i int) error {
	key := "direct-" + strconv.Itoa(i) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	ch := make(chan struct{})
	d.mu.Lock()
	d.wait[key] = ch
	d.mu.Unlock()
	var perr atomic.Pointer[error]
	cb := func(_ *kgo.Record, err error) {
		if err != nil {
			perr.CompareAndSwap(nil, &err)
		}
	}
	d.prod.Produce(ctx, &kgo.Record{Topic: d.topic, Key: []byte(key), Value: payload}, cb)
	d.prod.Produce(ctx, &kgo.Record{Topic: d.topic, Key: []byte(key)}, cb)
	select {
	case <-ch:
		if err := perr.Load(); err != nil {
			return *err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// grpcFloor serves the echo service from Ferry's own gRPC server with a
// handler that answers each request at once, with no Kafka behind it: the
// cost of the gRPC hop alone, which bounds what Ferry can reach.
func grpcFloor(b *testing.B) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpcserver.New(grpcserver.Options{
		MaxRecvMessageSize: 4 << 20,
		ShutdownTimeout:    time.Second,
		Logger:             testLogger(b),
		Handler: func(_ any, ss grpc.ServerStream) error {
			for {
				var f frame.Frame
				if err := ss.RecvMsg(&f); err != nil {
					if err == io.EOF {
						return nil
					}
					return err
				}
				if err := ss.SendMsg(&f); err != nil {
					return err
				}
			}
		},
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	b.Cleanup(func() { _ = srv.Close(context.Background()); <-done })
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}

// BenchmarkProxy compares the full round trip — client → Ferry → Kafka →
// Ferry's back end → gRPC server → and back — with the same server called
// directly.
//
// Run: go test ./internal/app -run '^$' -bench Proxy -benchtime 5000x
func BenchmarkProxy(b *testing.B) {
	srv := startEchoServer(b, "echo")
	req := echo("benchmark payload of a typical small request")
	for _, inflight := range []int{1, 64} {
		b.Run("server-direct/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			cc, err := grpc.NewClient(srv.addr,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			runLoad(b, inflight, func(ctx context.Context, _ int) error {
				var resp []byte
				return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
			})
		})
		b.Run("ferry/inflight="+strconv.Itoa(inflight), func(b *testing.B) {
			reqT, repT := kit.Topic(b, 1, nil), kit.Topic(b, 1, nil)
			a := startFerry(b, proxyConfig(b, reqT, repT, srv.addr, ""))
			cc := dial(b, a)
			runLoad(b, inflight, func(ctx context.Context, _ int) error {
				var resp []byte
				return cc.Invoke(ctx, echoSvc+"UnaryEcho", &req, &resp)
			})
		})
	}
}
