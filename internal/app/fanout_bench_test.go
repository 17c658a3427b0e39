package app_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// fanoutPayload is a FanoutMessage whose text starts with the nanosecond
// time it was written, for produce-to-delivery latency.
func fanoutPayload(pad int) []byte {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixNano()))
	return echo(string(ts[:]) + strings.Repeat("x", pad))
}

func sentAt(msg []byte) time.Time {
	s := unecho(msg)
	if len(s) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64([]byte(s[:8]))))
}

// fanoutLoad opens subs streams on conns connections with open, then
// writes b.N records with write and waits until every subscriber got all
// of them. It reports deliveries per second and produce-to-delivery p50
// and p99.
func fanoutLoad(b *testing.B, subs int, open func(i int) (recv func() ([]byte, error), closeFn func()), write func(n int)) {
	type sub struct {
		recv  func() ([]byte, error)
		close func()
	}
	ss := make([]sub, subs)
	for i := range ss {
		r, c := open(i)
		ss[i] = sub{r, c}
	}
	defer func() {
		for _, s := range ss {
			s.close()
		}
	}()
	// A probe record tells that every subscriber is attached.
	write(1)
	for i, s := range ss {
		if _, err := s.recv(); err != nil {
			b.Fatalf("subscriber %d: %v", i, err)
		}
	}
	lat := make([][]time.Duration, subs)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	start := time.Now()
	for i, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, b.N)
			for j := 0; j < b.N; j++ {
				m, err := s.recv()
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				l = append(l, time.Since(sentAt(m)))
			}
			lat[i] = l
		}()
	}
	write(b.N)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(subs*b.N)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// writer returns a function that writes n timestamped records to topic.
func writer(b *testing.B, topic string, pad int) func(n int) {
	prod := kit.Client(b, kgo.ProducerLinger(0))
	return func(n int) {
		for i := 0; i < n; i++ {
			prod.Produce(context.Background(), &kgo.Record{Topic: topic, Value: fanoutPayload(pad)}, nil)
		}
		if err := prod.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// grpcStreams opens n FanoutServerStream calls spread over a few
// connections to addr.
func grpcStreams(b *testing.B, addr string, subs int) func(i int) (func() ([]byte, error), func()) {
	// As many clients would: up to 500 streams per connection.
	conns := max(8, (subs+499)/500)
	ccs := make([]*grpc.ClientConn, conns)
	for i := range ccs {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		ccs[i] = cc
	}
	return func(i int) (func() ([]byte, error), func()) {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := ccs[i%conns].NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, fanoutMethod)
		if err != nil {
			b.Fatal(err)
		}
		empty := []byte{}
		if err := s.SendMsg(&empty); err != nil {
			b.Fatal(err)
		}
		s.CloseSend()
		return func() ([]byte, error) {
			var m []byte
			err := s.RecvMsg(&m)
			return m, err
		}, cancel
	}
}

// BenchmarkFanout streams one topic to many subscribers through Ferry,
// against the same bytes sent by a gRPC server that does nothing else (the
// gRPC floor) and against one franz-go consumer per subscriber.
//
// Run: go test ./internal/app -run '^$' -bench Fanout -benchtime 100x
func BenchmarkFanout(b *testing.B) {
	const pad = 100
	for _, subs := range []int{1, 100, 1000, 10000} {
		b.Run("ferry/subs="+strconv.Itoa(subs), func(b *testing.B) {
			topic := kit.Topic(b, 1, nil)
			// The topic is new and empty: starting at the earliest record
			// is starting at the tail, with no race against the probe.
			a := startFerry(b, fetchRoute(topic, "      max_buffered_per_subscriber: 4096\n"))
			write := writer(b, topic, pad)
			fanoutLoad(b, subs, grpcStreams(b, a.GRPCAddr(), subs), write)
		})
		b.Run("grpc-floor/subs="+strconv.Itoa(subs), func(b *testing.B) {
			fl := startFloor(b, subs)
			fanoutLoad(b, subs, grpcStreams(b, fl.addr, subs), func(n int) {
				for i := 0; i < n; i++ {
					fl.broadcast(fanoutPayload(pad))
				}
			})
		})
		if subs > 1000 {
			continue // 10,000 Kafka clients in one process exhaust this machine
		}
		b.Run("direct/subs="+strconv.Itoa(subs), func(b *testing.B) {
			topic := kit.Topic(b, 1, nil)
			write := writer(b, topic, pad)
			fanoutLoad(b, subs, func(int) (func() ([]byte, error), func()) {
				cl := kit.Client(b, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
				var buf []*kgo.Record
				return func() ([]byte, error) {
					for len(buf) == 0 {
						fs := cl.PollFetches(context.Background())
						if err := fs.Err0(); err != nil {
							return nil, err
						}
						buf = fs.Records()
					}
					r := buf[0]
					buf = buf[1:]
					return r.Value, nil
				}, cl.Close
			}, write)
		})
	}
}

// floor is a gRPC server that sends every subscriber the frames given to
// broadcast, and nothing else: the cost of gRPC streaming alone.
type floor struct {
	addr string
	want int
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func startFloor(b *testing.B, want int) *floor {
	fl := &floor{want: want, subs: map[chan []byte]struct{}{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	fl.addr = lis.Addr().String()
	srv := grpcserver.New(grpcserver.Options{
		MaxRecvMessageSize: 4 << 20, MaxConcurrentStreams: 1000, ShutdownTimeout: time.Second, Logger: testLogger(b),
		Handler: func(_ any, ss grpc.ServerStream) error {
			var req frame.Frame
			if err := ss.RecvMsg(&req); err != nil {
				return err
			}
			ch := make(chan []byte, 4096)
			fl.mu.Lock()
			fl.subs[ch] = struct{}{}
			fl.mu.Unlock()
			defer func() {
				fl.mu.Lock()
				delete(fl.subs, ch)
				fl.mu.Unlock()
			}()
			for {
				select {
				case m := <-ch:
					if err := ss.SendMsg(&frame.Frame{Bytes: m}); err != nil {
						return err
					}
				case <-ss.Context().Done():
					return nil
				}
			}
		},
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	b.Cleanup(func() { _ = srv.Close(context.Background()); <-done })
	return fl
}

// broadcast sends m to every subscriber, once all of them are there.
func (fl *floor) broadcast(m []byte) {
	for {
		fl.mu.Lock()
		n := len(fl.subs)
		fl.mu.Unlock()
		if n >= fl.want {
			break
		}
		time.Sleep(time.Millisecond)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for ch := range fl.subs {
		select {
		case ch <- m:
		default:
		}
	}
}

// BenchmarkFanoutIdleMemory measures what idle subscribers cost a Ferry
// process: it starts ferry (built from this tree) with a fetch route, opens
// 10,000 streams that receive nothing, and reads the process's resident
// memory before and after.
//
// Run: go test ./internal/app -run '^$' -bench FanoutIdleMemory -benchtime 1x
func BenchmarkFanoutIdleMemory(b *testing.B) {
	const subs = 10000
	bin := buildFerry(b)
	topic := kit.Topic(b, 1, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := filepath.Join(b.TempDir(), "ferry.yaml")
	writeFile(b, cfg, fmt.Sprintf(`clusters: [{name: default%s}]
listeners: {grpc: {address: %q}, admin: {address: ""}}
protos: [{files: [fanout.proto], import_paths: [%q]}]
log: {level: warn}
routes:
%s`, kit.ClusterYAML(b), addr, filepath.Join(root(b), "examples", "fanout"), fetchRoute(topic, "      start: latest\n")))
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("ferry did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One stream first, so the hub and connections exist in the baseline.
	open := grpcStreams(b, addr, subs)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	_, c := open(0)
	closers = append(closers, c)
	time.Sleep(500 * time.Millisecond)
	before := rss(b, cmd.Process.Pid)
	for i := 1; i <= subs; i++ {
		_, c := open(i)
		closers = append(closers, c)
	}
	time.Sleep(2 * time.Second) // let every call reach Ferry and settle
	after := rss(b, cmd.Process.Pid)
	b.ReportMetric(float64(after-before)/(1<<20), "MB/10k-subscribers")
	b.ReportMetric(float64(after-before)/subs, "bytes/subscriber")
}

// rss reads a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
