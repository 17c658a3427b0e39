package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// kafkaAPIYAML is a configuration serving both Kafka APIs, with
// test-sized timeouts; extra is appended under kafka_api.consume.
func kafkaAPIYAML(t testing.TB, extra string) string {
	return fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}
  http: {address: "127.0.0.1:0"}
  admin: {address: ""}
log:
  level: ${FERRY_TEST_LOG:-warn}
kafka_api:
  enabled: true
  pixy: true
  consume:
    long_poll_timeout: 500ms
    commit_interval: 50ms
    session_timeout: 6s
%s`, kit.ClusterYAML(t), extra)
}

func startKafkaAPI(t testing.TB, extra string) *app.App {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(kafkaAPIYAML(t, extra)))
	if err != nil {
		t.Fatal(err)
	}
	return startConfig(t, cfg)
}

func dialAddr(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestKafkaAPIFaces checks that one Ferry serves Ferry's and Kafka-Pixy's
// APIs over gRPC and REST on one engine: a record produced through one
// face is consumed, in the same group, through another.
func TestKafkaAPIFaces(t *testing.T) {
	kit.CheckLeaks(t)
	a := startKafkaAPI(t, "")
	topic := kit.Topic(t, 1, nil)
	group := "g-" + topic
	cc := dialAddr(t, a.GRPCAddr())
	ctx := testkit.Context(t, 30*time.Second)
	base := "http://" + a.HTTPAddr()

	for _, svc := range []string{"ferry.kafka.v1.Kafka", "KafkaPixy"} {
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %s: %v %v", svc, r, err)
		}
	}

	// Ferry gRPC produce; Kafka-Pixy gRPC consume.
	ferry := kafkav1.NewKafkaClient(cc)
	res, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Key: []byte("k"), ValueText: proto.String("one")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Partition != 0 || res.Offset != 0 {
		t.Fatalf("produce: %v", res)
	}
	pixy := kafkapixy.NewKafkaPixyClient(cc)
	m, err := pixy.ConsumeNAck(ctx, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Message) != "one" || string(m.KeyValue) != "k" {
		t.Fatalf("pixy consume: %v", m)
	}

	// Ferry REST produce; Kafka-Pixy REST consume, acknowledging the
	// first message on the way.
	resp, err := http.Post(base+"/v1/clusters/default/topics/"+topic+"/records", "application/json",
		strings.NewReader(`{"valueJson": {"n": 2}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"offset":"1"`) {
		t.Fatalf("REST produce: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(fmt.Sprintf("%s/topics/%s/messages?group=%s&ackPartition=0&ackOffset=0", base, topic, group))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		Value  []byte `json:"value"`
		Offset int64  `json:"offset"`
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 200 || string(got.Value) != `{"n":2}` || got.Offset != 1 {
		t.Fatalf("pixy REST consume: %d %s", resp.StatusCode, body)
	}

	// Ferry's offsets over REST show the first acknowledged; the
	// Kafka-Pixy ping answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = http.Get(fmt.Sprintf("%s/v1/clusters/default/groups/%s/topics/%s/offsets", base, group, topic))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `"committed":"1"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("offsets: %d %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err = http.Get(base + "/_ping")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "pong" {
		t.Fatalf("ping: %q", body)
	}
}

// TestKafkaAPIConsumerKilled kills a Ferry process (SIGKILL) whose client
// holds unacknowledged messages. Once the group's session times out,
// another Ferry delivers exactly those again: the acknowledged ones, kept
// as sparse acks in the commit metadata, are not redelivered.
func TestKafkaAPIConsumerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ferry and waits for a group session to time out")
	}
	bin := buildFerry(t)
	topic := kit.Topic(t, 2, nil)
	group := "g-" + topic

	// The victim serves gRPC on a port of its own choosing: find it in
	// its log.
	cfgFile := filepath.Join(t.TempDir(), "victim.yaml")
	writeFile(t, cfgFile, strings.Replace(kafkaAPIYAML(t, ""), "${FERRY_TEST_LOG:-warn}", "info", 1))
	victim := exec.Command(bin, "serve", "-c", cfgFile)
	logs := &syncBuffer{}
	victim.Stdout, victim.Stderr = logs, logs
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = victim.Process.Kill()
			_ = victim.Wait()
		}
		if t.Failed() {
			t.Logf("killed instance's log:\n%s", logs.String())
		}
	})
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; {
		if i := strings.Index(logs.String(), `msg="serving gRPC" address=`); i >= 0 {
			addr = strings.Fields(logs.String()[i+len(`msg="serving gRPC" address=`):])[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim never served:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	ctx := testkit.Context(t, 90*time.Second)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, addr))
	const n = 20
	for i := range n {
		if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Key: fmt.Appendf(nil, "k%d", i),
			ValueText: proto.String(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := ferry.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: n, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT}); err != nil {
		t.Fatal(err)
	}
	var acked, unacked []string
	var acks []*kafkav1.MessageRef
	for _, m := range recvMessages(t, stream, n) {
		// Every partition gets acks: even offsets are acknowledged.
		if m.Offset%2 == 0 {
			acked = append(acked, m.GetValueText())
			acks = append(acks, &kafkav1.MessageRef{Partition: m.Partition, Offset: m.Offset})
		} else {
			unacked = append(unacked, m.GetValueText())
		}
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Acks: acks}); err != nil {
		t.Fatal(err)
	}
	// Wait until the acks are committed (as sparse acks or as the offset).
	adm := kadmClient(t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		os, err := adm.FetchOffsets(ctx, group)
		if err == nil {
			done := 0
			for _, p := range []int32{0, 1} {
				if o, ok := os.Lookup(topic, p); ok && (o.Metadata != "" || o.At > 0) {
					done++
				}
			}
			if done == 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("acks never committed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killed = true

	// Another Ferry joins the group; once the victim's session expired it
	// gets the partitions and delivers exactly the unacknowledged.
	other := kafkav1.NewKafkaClient(dialAddr(t, startKafkaAPI(t, "").GRPCAddr()))
	start := time.Now()
	stream, err = other.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: n, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT}); err != nil {
		t.Fatal(err)
	}
	var again []string
	for _, m := range recvMessages(t, stream, len(unacked)) {
		again = append(again, m.GetValueText())
		if err := stream.Send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{{Partition: m.Partition, Offset: m.Offset}}}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(again)
	slices.Sort(unacked)
	if !slices.Equal(again, unacked) {
		t.Fatalf("redelivered %v, want the unacknowledged %v (acknowledged: %v)", again, unacked, acked)
	}
	t.Logf("the %d unacknowledged messages were delivered again %s after the kill; none of the %d acknowledged",
		len(again), time.Since(start).Round(time.Millisecond), len(acked))
	// Nothing else comes: the acknowledged stay acknowledged.
	extra := make(chan string, 1)
	go func() {
		if r, err := stream.Recv(); err == nil && len(r.Messages) > 0 {
			extra <- r.Messages[0].GetValueText()
		}
	}()
	select {
	case v := <-extra:
		t.Fatalf("delivered again although acknowledged: %s", v)
	case <-time.After(time.Second):
	}
	_ = os.Remove(cfgFile)
}

// recvMessages reads n messages from a Consume stream; a response may
// carry several.
func recvMessages(t testing.TB, stream kafkav1.Kafka_ConsumeClient, n int) []*kafkav1.Message {
	t.Helper()
	var out []*kafkav1.Message
	for len(out) < n {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, r.Messages...)
	}
	if len(out) > n {
		t.Fatalf("got %d messages, granted %d credits", len(out), n)
	}
	return out
}

// syncBuffer is a bytes.Buffer a subprocess writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
