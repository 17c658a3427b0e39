package kafkaapi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/sparseacks"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// engineConfig is a consume configuration with test-sized timeouts.
func engineConfig() config.KafkaAPI {
	cfg := config.Default().KafkaAPI
	cfg.Consume.LongPollTimeout = 500 * time.Millisecond
	cfg.Consume.CommitInterval = 50 * time.Millisecond
	cfg.Consume.SessionTimeout = 6 * time.Second
	cfg.Consume.SubscriptionTimeout = 5 * time.Second
	return cfg
}

// startEngine returns a Service with cfg over the test brokers (see
// newTestService).
func startEngine(t testing.TB, cfg config.KafkaAPI) *Service {
	t.Helper()
	return newTestService(t, &cfg)
}

// produceN writes n records "v<i>" with key "k<i>" to partition p (or by
// key when p < 0) and returns them in order.
func produceN(t testing.TB, s *Service, topic string, n int, p int32) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]Result, n)
	for i := range n {
		r, err := s.Produce(ctx, "", topic, Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i), Partition: p})
		if err != nil {
			t.Fatalf("producing record %d: %v", i, err)
		}
		out[i] = r
	}
	return out
}

// take reads n messages from ss, failing after d.
func take(t testing.TB, ss *Session, n int, d time.Duration) []*Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*Message
	for len(out) < n {
		m, err := ss.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, m)
	}
	return out
}

// noMore checks that ss gets nothing within d.
func noMore(t testing.TB, ss *Session, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := ss.Next(ctx); err == nil {
		t.Fatalf("unexpected message: partition %d offset %d value %q", m.Partition, m.Offset, m.Value)
	} else if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("waiting for nothing: %v", err)
	}
}

// committed reads group's committed offset and metadata of partition p.
func committed(t testing.TB, group, topic string, p int32) (int64, string) {
	t.Helper()
	os, err := kadm.NewClient(kit.Client(t)).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := os.Lookup(topic, p)
	if !ok {
		return -1, ""
	}
	return o.At, o.Metadata
}

// waitCommitted waits until partition p's commit is want.
func waitCommitted(t testing.TB, group, topic string, p int32, want int64, wantMeta string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		at, meta := committed(t, group, topic, p)
		if at == want && meta == wantMeta {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offset of partition %d: %d %q, want %d %q", p, at, meta, want, wantMeta)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEngineProduce(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 3, nil)
	ctx := context.Background()

	// Same key, same partition; Java partitioning of "k1" is checked by
	// the partitioner's own tests in franz-go, here only consistency.
	a, err := s.Produce(ctx, "", topic, Record{Key: []byte("same"), Value: []byte("1"), Partition: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Produce(ctx, testClusterName, topic, Record{Key: []byte("same"), Value: []byte("2"), Partition: -1})
	if err != nil {
		t.Fatal(err)
	}
	if a.Partition != b.Partition || b.Offset != a.Offset+1 {
		t.Fatalf("same key: %+v then %+v", a, b)
	}
	// Explicit partition wins over the key.
	for p := int32(0); p < 3; p++ {
		r, err := s.Produce(ctx, "", topic, Record{Key: []byte("same"), Value: []byte("x"), Partition: p})
		if err != nil {
			t.Fatal(err)
		}
		if r.Partition != p {
			t.Fatalf("explicit partition %d: written to %d", p, r.Partition)
		}
	}
	// A partition the topic lacks is the caller's mistake.
	_, err = s.Produce(ctx, "", topic, Record{Value: []byte("x"), Partition: 7})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "partition 7") {
		t.Fatalf("partition 7: %v", err)
	}
	_, err = s.Produce(ctx, "nope", topic, Record{Value: []byte("x"), Partition: -1})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown cluster "nope"`) {
		t.Fatalf("unknown cluster: %v", err)
	}
	_, err = s.Produce(ctx, "", "", Record{Value: []byte("x"), Partition: -1})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no topic: %v", err)
	}
}

func TestEngineAcksOutOfOrder(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 6, 0)

	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := take(t, ss, 6, 20*time.Second)
	for i, m := range msgs {
		if m.Offset != int64(i) || string(m.Value) != fmt.Sprintf("v%d", i) || m.Deliveries != 1 {
			t.Fatalf("message %d: offset %d value %q deliveries %d", i, m.Offset, m.Value, m.Deliveries)
		}
	}
	// Ack 1, 3 and 4: the commit stays at 0 with [1,2) and [3,5) as
	// sparse acks, in Kafka-Pixy's encoding.
	for _, off := range []int64{1, 3, 4} {
		if err := ss.Ack(0, off); err != nil {
			t.Fatal(err)
		}
	}
	want := sparseacks.Encode(0, []sparseacks.Range{{From: 1, To: 2}, {From: 3, To: 5}})
	waitCommitted(t, group, topic, 0, 0, want)
	// Acking again is harmless; acking what was never delivered is not.
	if err := ss.Ack(0, 1); err != nil {
		t.Fatalf("second ack: %v", err)
	}
	if err := ss.Ack(0, 99); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ack of offset 99: %v", err)
	}
	if err := ss.Ack(5, 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ack of partition 5: %v", err)
	}
	// Ack 0 and 2: the commit moves to 5, the first unacknowledged.
	for _, off := range []int64{2, 0} {
		if err := ss.Ack(0, off); err != nil {
			t.Fatal(err)
		}
	}
	waitCommitted(t, group, topic, 0, 5, "")
	if n := ss.Outstanding(); n != 1 {
		t.Fatalf("outstanding: %d, want 1 (offset 5)", n)
	}
}

func TestEngineRedeliveryToAnotherSession(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 3, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 30, -1)

	a, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i, m := range take(t, a, 30, 20*time.Second) {
		got[string(m.Value)]++
		if i%2 == 0 {
			if err := a.Ack(m.Partition, m.Offset); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The stream ends with 15 unacknowledged: another session gets
	// exactly those, at once and marked as second deliveries.
	b, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	a.Close(true)
	again := take(t, b, 15, 5*time.Second)
	for _, m := range again {
		if m.Deliveries != 2 {
			t.Fatalf("redelivered %q: deliveries %d", m.Value, m.Deliveries)
		}
		got[string(m.Value)]++
		if err := b.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	noMore(t, b, 300*time.Millisecond)
	if len(got) != 30 {
		t.Fatalf("distinct messages: %d, want 30", len(got))
	}
	for v, n := range got {
		if n > 2 {
			t.Fatalf("%s delivered %d times", v, n)
		}
	}
	b.Close(true)
}

func TestEngineAckTimeoutAndDeadLetter(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.AckTimeout = 200 * time.Millisecond
	cfg.Consume.MaxDeliveries = 3
	cfg.Consume.DeadLetterTopic = "{topic}.dead"
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 2, 0)

	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	// Offset 0 is never acknowledged; offset 1 is, on its second delivery.
	deliveries := map[int64]int{}
	deadline := time.Now().Add(20 * time.Second)
	for deliveries[0] < 3 || deliveries[1] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: %v", deliveries)
		}
		m := take(t, ss, 1, 10*time.Second)[0]
		deliveries[m.Offset]++
		if m.Deliveries != deliveries[m.Offset] {
			t.Fatalf("offset %d: Deliveries %d, counted %d", m.Offset, m.Deliveries, deliveries[m.Offset])
		}
		if m.Offset == 1 && m.Deliveries == 2 {
			if err := ss.Ack(0, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	noMore(t, ss, time.Second)
	if deliveries[0] != 3 {
		t.Fatalf("offset 0 delivered %d times, want 3", deliveries[0])
	}
	// Offset 0 went to the dead-letter topic and both are settled.
	waitCommitted(t, group, topic, 0, 2, "")
	cl, err := kgo.NewClient(append(kit.Opts(t), kgo.ConsumeTopics(topic+".dead"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Value) != "v0" {
		t.Fatalf("dead letters: %v", recs)
	}
	hdr := map[string]string{}
	for _, h := range recs[0].Headers {
		hdr[h.Key] = string(h.Value)
	}
	if hdr["ferry-dead-letter-offset"] != "0" || hdr["ferry-dead-letter-deliveries"] != "3" || hdr["ferry-dead-letter-group"] != group {
		t.Fatalf("dead letter headers: %v", hdr)
	}
	ss.Close(true)
}

func TestEngineRestartKeepsSparseAcks(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	first := startEngine(t, engineConfig())
	produceN(t, first, topic, 10, 0)
	ss, err := first.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range take(t, ss, 10, 20*time.Second) {
		if m.Offset%3 != 0 { // acks 1,2,4,5,7,8; leaves 0,3,6,9
			if err := ss.Ack(m.Partition, m.Offset); err != nil {
				t.Fatal(err)
			}
		}
	}
	ss.Close(false)
	first.Close(context.Background()) // commits and leaves the group

	second := startEngine(t, engineConfig())
	ss, err = second.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	var offsets []int64
	for _, m := range take(t, ss, 4, 20*time.Second) {
		offsets = append(offsets, m.Offset)
	}
	if fmt.Sprint(offsets) != "[0 3 6 9]" {
		t.Fatalf("after restart delivered %v, want [0 3 6 9]", offsets)
	}
	noMore(t, ss, 500*time.Millisecond)
	ss.Close(true)
}

func TestEngineMaxUnackedPerPartition(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxUnackedPerPartition = 3
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 6, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := take(t, ss, 3, 20*time.Second)
	noMore(t, ss, 300*time.Millisecond)
	if err := ss.Ack(0, msgs[1].Offset); err != nil {
		t.Fatal(err)
	}
	if m := take(t, ss, 1, 5*time.Second)[0]; m.Offset != 3 {
		t.Fatalf("after one ack got offset %d, want 3", m.Offset)
	}
	noMore(t, ss, 300*time.Millisecond)
	ss.Close(true)
}

func TestEngineOpenErrors(t *testing.T) {
	s := startEngine(t, engineConfig())
	ctx := context.Background()
	if _, err := s.Open(ctx, "", "g", "no-such-topic-"+testkit.Name(t, "x")); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown topic: %v", err)
	}
	if _, err := s.Open(ctx, "", "", "t"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no group: %v", err)
	}
	if _, err := s.Open(ctx, "other", "g", "t"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown cluster: %v", err)
	}
	if err := s.Ack(ctx, "", "never", "t", 0, 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ack without member: %v", err)
	}
}

// TestEngineDeadLetterWriteFails checks that a message whose dead-letter
// write fails is delivered again rather than lost or settled.
func TestEngineDeadLetterWriteFails(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.AckTimeout = 200 * time.Millisecond
	cfg.Consume.MaxDeliveries = 1
	// No topic: every write fails at once (configuration validation
	// refuses this; the engine must still not lose the message).
	cfg.Consume.DeadLetterTopic = ""
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 1, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	first := take(t, ss, 1, 20*time.Second)[0]
	// Not acknowledged: after the ack timeout the dead-letter write fails
	// and the message comes again.
	again := take(t, ss, 1, 20*time.Second)[0]
	if again.Offset != first.Offset {
		t.Fatalf("delivered offset %d, then %d", first.Offset, again.Offset)
	}
	if err := ss.Ack(0, again.Offset); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, group, topic, 0, 1, "")
	ss.Close(true)
}

// TestEngineAckOfQueuedMessage checks that a read but undelivered offset
// cannot be acknowledged (it would be committed past without delivery).
func TestEngineAckOfQueuedMessage(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxUnackedPerPartition = 1
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 3, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	m := take(t, ss, 1, 20*time.Second)[0]
	// Offsets 1 and 2 are read (queued) once 0 is out; wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ss.Ack(0, 2)
		if status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), "waiting to be delivered") {
			break
		}
		if err == nil {
			t.Fatal("ack of queued offset 2 accepted")
		}
		if time.Now().After(deadline) {
			t.Fatalf("ack of offset 2: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := ss.Ack(0, m.Offset); err != nil {
		t.Fatal(err)
	}
	if got := take(t, ss, 1, 5*time.Second)[0]; got.Offset != 1 {
		t.Fatalf("next offset %d, want 1", got.Offset)
	}
	ss.Close(true)
}

// TestEnginePausedPartitionComesBack moves a partition that was paused
// (stuck on unacknowledged messages) to another instance and back: it must
// be read again, although franz-go keeps pauses across assignments.
func TestEnginePausedPartitionComesBack(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxUnackedPerPartition = 1
	cfg.Consume.MaxBufferedPerPartition = 1
	topic := kit.Topic(t, 2, nil)
	group := testkit.Name(t, "group")
	a := startEngine(t, cfg)
	for p := int32(0); p < 2; p++ {
		produceN(t, a, topic, 5, p)
	}
	sa, err := a.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	// One message out per partition, none acknowledged: both partitions
	// are stuck with a full queue, so they get paused.
	held := take(t, sa, 2, 20*time.Second)
	time.Sleep(300 * time.Millisecond)

	// A second instance takes one partition; it leaves again and the
	// partition comes back to the first.
	b := startEngine(t, cfg)
	sb, err := b.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for a.ownedPartitions(group, topic) == "[0 1]" {
		if time.Now().After(deadline) {
			t.Fatal("the second instance never got a partition")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sb.Close(true)
	b.Close(context.Background())
	for a.ownedPartitions(group, topic) != "[0 1]" {
		if time.Now().After(deadline) {
			t.Fatalf("partitions owned after the second left: %s", a.ownedPartitions(group, topic))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Acknowledge what is still ours; every other record of both
	// partitions must come, one at a time.
	for _, m := range held {
		_ = sa.Ack(m.Partition, m.Offset)
	}
	seen := map[string]bool{}
	for _, m := range held {
		seen[fmt.Sprint(m.Partition, "/", m.Offset)] = true
	}
	for len(seen) < 10 {
		m := take(t, sa, 1, 10*time.Second)[0]
		seen[fmt.Sprint(m.Partition, "/", m.Offset)] = true
		if err := sa.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	sa.Close(true)
}

// TestEngineTwoClusters addresses two clusters by name: the test broker as
// "main" (the default) and a second, in-process broker as "other".
func TestEngineTwoClusters(t *testing.T) {
	other, err := kafka.StartEmbedded(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cc := func(name string) config.Cluster {
		return config.Cluster{Name: name, ClientID: "ferry-test", DialTimeout: 10 * time.Second,
			Producer: config.Producer{MaxBufferedRecords: 1000, Compression: "none", DeliveryTimeout: 30 * time.Second}}
	}
	main := cc("main")
	main.TLS, main.SASL = kit.Security(t)
	clusters := map[string]*kafka.Cluster{
		"main":  kafka.NewCluster(main, kit.Seeds(t), logger),
		"other": kafka.NewCluster(cc("other"), other.Addrs(), logger),
	}
	s := New(engineConfig(), clusters, []string{"main", "other"}, logger)
	t.Cleanup(func() {
		s.Close(context.Background())
		clusters["main"].Close(context.Background())
		clusters["other"].Close(context.Background())
	})
	if got := fmt.Sprint(s.Clusters()); got != "[main other]" {
		t.Fatalf("clusters: %s", got)
	}
	ctx := context.Background()
	topic := testkit.Name(t, "topic")
	if _, err := s.Produce(ctx, "other", topic, Record{Value: []byte("on other"), Partition: -1}); err != nil {
		t.Fatal(err)
	}
	// The topic exists on "other" only.
	if _, err := s.Open(ctx, "", "g", topic); status.Code(err) != codes.NotFound {
		t.Fatalf("the topic on the default cluster: %v", err)
	}
	ss, err := s.Open(ctx, "other", testkit.Name(t, "group"), topic)
	if err != nil {
		t.Fatal(err)
	}
	if m := take(t, ss, 1, 20*time.Second)[0]; string(m.Value) != "on other" {
		t.Fatalf("consumed %q", m.Value)
	}
	ss.Close(true)
}

// TestEngineIdleMemberLeaves checks that a member nobody uses leaves its
// group after the subscription timeout, having committed, and that the
// next use joins again and goes on from there.
func TestEngineIdleMemberLeaves(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.SubscriptionTimeout = 500 * time.Millisecond
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 4, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range take(t, ss, 2, 20*time.Second) {
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	ss.Close(true)
	deadline := time.Now().Add(15 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.members)
		s.mu.Unlock()
		members, err := s.describeGroupMembers(context.Background(), group)
		if n == 0 && err == nil && members == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d members here, %d in the group (%v)", n, members, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitCommitted(t, group, topic, 0, 2, "")
	ss, err = s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	if m := take(t, ss, 1, 20*time.Second)[0]; m.Offset != 2 {
		t.Fatalf("after rejoining got offset %d, want 2", m.Offset)
	}
	ss.Close(true)
}
