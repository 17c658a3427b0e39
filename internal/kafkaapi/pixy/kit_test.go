package pixy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// kit is the brokers the suite runs against: a real cluster when
// FERRY_TEST_BROKERS names one, else Ferry's embedded broker with three
// partitions per auto-created topic.
var kit = testkit.NewBroker(3)

func TestMain(m *testing.M) {
	code := m.Run()
	kit.Close()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(testkit.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	testLongPoll   = 500 * time.Millisecond
	testCommitEach = 100 * time.Millisecond
)

// testConfig is the Kafka API configuration of the tests: Ferry's defaults
// with short timeouts.
func testConfig() config.KafkaAPI {
	cfg := config.Default().KafkaAPI
	cfg.Enabled, cfg.Pixy = true, true
	cfg.Consume.LongPollTimeout = testLongPoll
	cfg.Consume.SubscriptionTimeout = 5 * time.Second
	cfg.Consume.CommitInterval = testCommitEach
	cfg.Consume.SessionTimeout = 6 * time.Second
	return cfg
}

// fixture is one Ferry Kafka API with Kafka-Pixy's gRPC face (on an
// in-memory listener, through the client generated from Kafka-Pixy's proto)
// and REST face (on a loopback HTTP server).
type fixture struct {
	svc    *kafkaapi.Service
	srv    *Server
	client kafkapixy.KafkaPixyClient
	url    string // the REST base URL
}

func newFixture(t *testing.T, mutate ...func(*config.KafkaAPI)) *fixture {
	t.Helper()
	cfg := testConfig()
	for _, f := range mutate {
		f(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	cc := config.Cluster{
		Name:        "default",
		ClientID:    "ferry",
		DialTimeout: 10 * time.Second,
		Producer: config.Producer{
			MaxBufferedRecords: 100_000,
			Compression:        "none",
			DeliveryTimeout:    30 * time.Second,
		},
	}
	cc.TLS, cc.SASL = kit.Security(t)
	cluster := kafka.NewCluster(cc, kit.Seeds(t), logger)
	svc := kafkaapi.New(cfg, map[string]*kafka.Cluster{"default": cluster}, []string{"default"}, logger)
	srv := NewServer(svc, logger)

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(MaxRequestSize))
	kafkapixy.RegisterKafkaPixyServer(gs, srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///pixy",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(NewHandler(srv, MaxRequestSize))

	// Cleanups run last-in first-out: the faces stop before the engine,
	// the engine before the cluster's producers.
	t.Cleanup(func() {
		hs.Close()
		_ = conn.Close()
		gs.Stop()
		<-served
		svc.Close(context.Background())
		cluster.Close(context.Background())
	})
	return &fixture{svc: svc, srv: srv, client: kafkapixy.NewKafkaPixyClient(conn), url: hs.URL}
}

// newTopic creates a topic with three partitions and the given configs, and
// waits until every partition has a leader.
func newTopic(t testing.TB, configs map[string]*string) string {
	t.Helper()
	name := kit.Topic(t, 3, configs)
	adm := kadm.NewClient(kit.Client(t))
	ctx := testkit.Context(t, 30*time.Second)
	for {
		md, err := adm.Metadata(ctx, name)
		if err == nil {
			if td, ok := md.Topics[name]; ok && td.Err == nil && len(td.Partitions) == 3 {
				ready := true
				for _, p := range td.Partitions {
					ready = ready && p.Leader >= 0 && p.Err == nil
				}
				if ready {
					return name
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s has no leaders: %v", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// produceTo writes values to one partition of topic with a plain client,
// for tests that need known offsets.
func produceTo(t testing.TB, topic string, partition int32, values ...string) {
	t.Helper()
	cl := kit.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := testkit.Context(t, 30*time.Second)
	for _, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: partition, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("producing to %s/%d: %v", topic, partition, err)
		}
	}
}

// isLongPollTimeout reports whether err is Kafka-Pixy's empty long poll.
func isLongPollTimeout(err error) bool {
	st, _ := status.FromError(err)
	return st.Code() == codes.NotFound && st.Message() == "long polling timeout"
}

// consume calls ConsumeNAck until it returns a message, retrying long-poll
// timeouts as a Kafka-Pixy client does (a new group's first polls may end
// before the group assigned it partitions).
func (f *fixture) consume(t testing.TB, rq *kafkapixy.ConsNAckRq) *kafkapixy.ConsRs {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	for {
		rs, err := f.client.ConsumeNAck(ctx, rq)
		if err == nil {
			return rs
		}
		if !isLongPollTimeout(err) || ctx.Err() != nil {
			t.Fatalf("ConsumeNAck(%v): %v", rq, err)
		}
	}
}

// expectEmpty checks that a poll finds nothing: NOT_FOUND "long polling
// timeout" after about the long-poll timeout.
func (f *fixture) expectEmpty(t testing.TB, rq *kafkapixy.ConsNAckRq) {
	t.Helper()
	start := time.Now()
	rs, err := f.client.ConsumeNAck(testkit.Context(t, 20*time.Second), rq)
	if err == nil {
		t.Fatalf("ConsumeNAck(%v) = %v, want the long-poll timeout", rq, rs)
	}
	if !isLongPollTimeout(err) {
		t.Fatalf("ConsumeNAck(%v) = %v, want NOT_FOUND \"long polling timeout\"", rq, err)
	}
	if d := time.Since(start); d < testLongPoll*8/10 || d > testLongPoll+5*time.Second {
		t.Fatalf("the empty long poll took %v, want about %v", d, testLongPoll)
	}
}

// offsets returns GetOffsets by partition.
func (f *fixture) offsets(t testing.TB, topic, group string) map[int32]*kafkapixy.PartitionOffset {
	t.Helper()
	rs, err := f.client.GetOffsets(testkit.Context(t, 20*time.Second), &kafkapixy.GetOffsetsRq{Topic: topic, Group: group})
	if err != nil {
		t.Fatalf("GetOffsets(%s, %s): %v", topic, group, err)
	}
	out := map[int32]*kafkapixy.PartitionOffset{}
	for _, po := range rs.GetOffsets() {
		out[po.GetPartition()] = po
	}
	return out
}

// waitOffset waits until the group's committed offset of partition is
// offset with the given sparse acks, and returns the partition's row.
func (f *fixture) waitOffset(t testing.TB, topic, group string, partition int32, offset int64, sparse string) *kafkapixy.PartitionOffset {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		po := f.offsets(t, topic, group)[partition]
		if po != nil && po.GetOffset() == offset && po.GetSparseAcks() == sparse {
			return po
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d of %s in group %s: got %v, want offset %d sparse_acks %q", partition, topic, group, po, offset, sparse)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantCode fails t unless err is a status with code, and, when contains is
// not empty, a message containing it.
func wantCode(t testing.TB, what string, err error, code codes.Code, contains string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || !strings.Contains(st.Message(), contains) {
		t.Errorf("%s: got %v, want %v containing %q", what, err, code, contains)
	}
}

// httpDo sends a request to the fixture's REST face and returns the status
// and body.
func (f *fixture) httpDo(t testing.TB, method, path, contentType string, body io.Reader, hdr ...string) (int, []byte) {
	t.Helper()
	return httpDo(t, f.url, method, path, contentType, body, hdr...)
}

func httpDo(t testing.TB, base, method, path, contentType string, body io.Reader, hdr ...string) (int, []byte) {
	t.Helper()
	rq, err := http.NewRequestWithContext(testkit.Context(t, 30*time.Second), method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		rq.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		rq.Header.Add(hdr[i], hdr[i+1])
	}
	rs, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer rs.Body.Close()
	b, err := io.ReadAll(rs.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return rs.StatusCode, b
}
