package ferryapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/grpcserver"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// kit is the brokers every test uses: those FERRY_TEST_BROKERS names (a
// real Kafka), else one embedded broker for the package, with three
// partitions per auto-created topic.
var kit = testkit.NewBroker(3)

// testConfig is the Kafka API configuration with test-sized timeouts.
func testConfig() config.KafkaAPI {
	cfg := config.Default().KafkaAPI
	cfg.Enabled = true
	cfg.Consume.LongPollTimeout = 500 * time.Millisecond
	cfg.Consume.CommitInterval = 100 * time.Millisecond
	cfg.Consume.SessionTimeout = 6 * time.Second
	return cfg
}

// ferryGRPC returns Ferry's own gRPC server (its forced codec passes its
// frames through and hands every other message to grpc-go's proto codec)
// with services on it.
func ferryGRPC(services ...grpcserver.Service) *grpc.Server {
	return grpcserver.New(grpcserver.Options{MaxRecvMessageSize: 4 << 20, Services: services, Logger: slog.New(slog.DiscardHandler)}).GRPC()
}

// env is a Server on a Service over the test brokers, served by Ferry's
// gRPC server on a loopback port and by NewRESTHandler over HTTP.
type env struct {
	t      testing.TB
	cfg    config.KafkaAPI
	svc    *kafkaapi.Service
	client kafkav1.KafkaClient
	rest   *httptest.Server
	logs   *syncBuffer
}

type envOption func(*envOptions)

type envOptions struct {
	cfg   func(*config.KafkaAPI)
	plain bool // a plain grpc.Server instead of Ferry's, which forces its codec
}

func withConfig(f func(*config.KafkaAPI)) envOption { return func(o *envOptions) { o.cfg = f } }
func withPlainServer() envOption                    { return func(o *envOptions) { o.plain = true } }

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	kit.CheckLeaks(t)
	var o envOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg := testConfig()
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	logs := &syncBuffer{}
	level := slog.LevelInfo
	if os.Getenv("FERRY_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	cc := config.Cluster{Name: "default", ClientID: "ferry", DialTimeout: 10 * time.Second,
		Producer: config.Producer{MaxBufferedRecords: 100_000, Compression: "none", DeliveryTimeout: 30 * time.Second}}
	cc.TLS, cc.SASL = kit.Security(t)
	cluster := kafka.NewCluster(cc, kit.Seeds(t), logger.With("kafka", "franz-go"))
	svc := kafkaapi.New(cfg, map[string]*kafka.Cluster{"default": cluster}, []string{"default"}, logger)

	api := grpcserver.Service{Desc: &kafkav1.Kafka_ServiceDesc, Impl: NewServer(svc, logger)}
	var gs *grpc.Server
	if o.plain {
		gs = grpc.NewServer()
		gs.RegisterService(api.Desc, api.Impl)
	} else {
		gs = ferryGRPC(api)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewRESTHandler(gs, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	rest := httptest.NewServer(h)
	t.Cleanup(func() {
		rest.CloseClientConnections()
		gs.Stop()
		<-served
		rest.Close()
		conn.Close()
		svc.Close(context.Background())
		cluster.Close(context.Background())
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return &env{t: t, cfg: cfg, svc: svc, client: kafkav1.NewKafkaClient(conn), rest: rest, logs: logs}
}

// with returns e reporting to t, a subtest of e's test.
func (e *env) with(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

// syncBuffer collects log lines from any goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testCtx is a context bounded by the test's own deadline budget.
func testCtx(t testing.TB) context.Context { return testkit.Context(t, 90*time.Second) }

// produce writes n text records "<prefix>-<i>" to partition (-1: any) and
// returns where they went.
func (e *env) produce(ctx context.Context, topic string, partition int32, prefix string, n int) []*kafkav1.ProduceResponse {
	e.t.Helper()
	out := make([]*kafkav1.ProduceResponse, n)
	for i := range n {
		req := &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String(fmt.Sprintf("%s-%d", prefix, i))}
		if partition >= 0 {
			req.Partition = &partition
		}
		resp, err := e.client.Produce(ctx, req)
		if err != nil {
			e.t.Fatalf("producing record %d: %v", i, err)
		}
		out[i] = resp
	}
	return out
}

// waitCommitted sums the group's committed offsets on topic, waiting until the
// sum is want.
func (e *env) waitCommitted(ctx context.Context, group, topic string, want int64) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got int64
	for time.Now().Before(deadline) {
		resp, err := e.client.GetOffsets(ctx, &kafkav1.GetOffsetsRequest{Topic: topic, Group: group})
		if err != nil {
			e.t.Fatalf("GetOffsets: %v", err)
		}
		got = 0
		for _, p := range resp.GetPartitions() {
			if p.GetCommitted() > 0 {
				got += p.GetCommitted()
			}
		}
		if got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("group %s committed %d offsets of %s, want %d", group, got, topic, want)
}

// wantCode fails unless err is a status with code whose message holds
// every one of parts.
func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got error %v, want code %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("error %q does not mention %q", st.Message(), p)
		}
	}
}

// consumerStream is a Consume stream whose messages a goroutine receives.
type consumerStream struct {
	t      testing.TB
	stream kafkav1.Kafka_ConsumeClient
	cancel context.CancelFunc
	msgs   chan *kafkav1.Message
	done   chan struct{}
	err    error // why the stream ended, once done is closed
}

// consume opens a Consume stream with first as its first request.
func (e *env) consume(ctx context.Context, first *kafkav1.ConsumeRequest) *consumerStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	stream, err := e.client.Consume(ctx)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	c := &consumerStream{t: e.t, stream: stream, cancel: cancel, msgs: make(chan *kafkav1.Message, 10000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				c.err = err
				return
			}
			for _, m := range resp.GetMessages() {
				c.msgs <- m
			}
		}
	}()
	e.t.Cleanup(c.kill)
	if err := stream.Send(first); err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (c *consumerStream) send(req *kafkav1.ConsumeRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatalf("sending on the Consume stream: %v", err)
	}
}

// next returns the next message, failing the test after wait.
func (c *consumerStream) next(wait time.Duration) *kafkav1.Message {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		c.t.Fatalf("the Consume stream ended instead of delivering: %v", c.err)
	case <-time.After(wait):
		c.t.Fatalf("no message within %v", wait)
	}
	return nil
}

// take returns the next n messages, failing the test when they do not come
// within wait.
func (c *consumerStream) take(n int, wait time.Duration) []*kafkav1.Message {
	c.t.Helper()
	out := make([]*kafkav1.Message, n)
	for i := range out {
		out[i] = c.next(wait)
	}
	return out
}

// none fails the test if a message arrives within d.
func (c *consumerStream) none(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("got message %d-%d, want none", m.GetPartition(), m.GetOffset())
	case <-time.After(d):
	}
}

// end waits for the stream to end and returns its error (nil for OK).
func (c *consumerStream) end(wait time.Duration) error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(wait):
		c.t.Fatalf("the Consume stream did not end within %v", wait)
	}
	if errors.Is(c.err, io.EOF) {
		return nil
	}
	return c.err
}

// kill cancels the stream, as a client that goes away does.
func (c *consumerStream) kill() {
	c.cancel()
	<-c.done
}

// ref names a message.
func ref(m *kafkav1.Message) *kafkav1.MessageRef {
	return &kafkav1.MessageRef{Partition: m.GetPartition(), Offset: m.GetOffset()}
}

// key names a message for sets.
func key(m interface {
	GetPartition() int32
	GetOffset() int64
}) string {
	return fmt.Sprintf("%d-%d", m.GetPartition(), m.GetOffset())
}

// produceStream is a ProduceStream client that sends records in requests
// of one (send) or several (sendBatch), and reads results one at a time.
type produceStream struct {
	kafkav1.Kafka_ProduceStreamClient
	pending []*kafkav1.ProduceResult
}

func (e *env) produceStream(ctx context.Context) (*produceStream, error) {
	raw, err := e.client.ProduceStream(ctx)
	if err != nil {
		return nil, err
	}
	return &produceStream{Kafka_ProduceStreamClient: raw}, nil
}

func (p *produceStream) send(r *kafkav1.ProduceRequest) error { return p.sendBatch(r) }

func (p *produceStream) sendBatch(rs ...*kafkav1.ProduceRequest) error {
	return p.Send(&kafkav1.ProduceStreamRequest{Records: rs})
}

// recv returns the next result, or the error that ended the stream.
func (p *produceStream) recv() (*kafkav1.ProduceResult, error) {
	for len(p.pending) == 0 {
		resp, err := p.Recv()
		if err != nil {
			return nil, err
		}
		p.pending = resp.GetResults()
	}
	r := p.pending[0]
	p.pending = p.pending[1:]
	return r, nil
}
