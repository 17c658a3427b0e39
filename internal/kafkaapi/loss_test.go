package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/sparseacks"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// cutter dials Kafka for a member's client and can cut it off: every open
// connection is closed and new ones fail, as in a broker outage or a
// network partition, until it is joined again.
type cutter struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

// newCutter returns a cutter, or skips t when the test brokers need TLS:
// franz-go takes a dialer of the test's or the cluster's TLS, not both.
func newCutter(t testing.TB) *cutter {
	if tls, _ := kit.Security(t); tls.Enabled {
		t.Skip("the test cuts the member off with a dialer of its own, which franz-go does not combine with the cluster's TLS (FERRY_TEST_KAFKA_TLS_*)")
	}
	return &cutter{}
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("cut off from Kafka by the test")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) set(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for _, conn := range c.conns {
			_ = conn.Close()
		}
		c.conns = nil
	}
}

// waitOwned waits until the instance's member owns want ("[0]", "[]").
func waitOwned(t testing.TB, s *Service, group, topic, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.ownedPartitions(group, topic) != want {
		if time.Now().After(deadline) {
			t.Fatalf("owned partitions %s after %v, want %s", s.ownedPartitions(group, topic), d, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEngineAcksSurvivePartitionLoss cuts a member off Kafka until it
// loses its partition (its heartbeats fail for the session timeout, as in
// a broker outage), with acknowledgements not yet committed, then lets it
// back: it gets the partition again, nobody else committed meanwhile, so
// no acknowledged message may be delivered again, and what was not
// acknowledged must be.
func TestEngineAcksSurvivePartitionLoss(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.CommitInterval = time.Hour // nothing committed before the loss
	cfg.Consume.SessionTimeout = 6 * time.Second
	s := startEngine(t, cfg)
	cut := newCutter(t)
	s.memberOpts = []kgo.Opt{kgo.Dialer(cut.dial)}
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 10, 0)

	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close(true)
	acked := map[int64]bool{}
	for _, m := range take(t, ss, 10, 30*time.Second) {
		if m.Offset%3 == 2 { // 2, 5, 8 stay unacknowledged
			continue
		}
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
		acked[m.Offset] = true
	}

	cut.set(true)
	waitOwned(t, s, group, topic, "[]", 60*time.Second)
	cut.set(false)
	waitOwned(t, s, group, topic, "[0]", 60*time.Second)

	// The unacknowledged ones come again (their offers ended with the
	// loss), and nothing else.
	var got []int64
	for _, m := range take(t, ss, 3, 30*time.Second) {
		if acked[m.Offset] {
			t.Fatalf("acknowledged offset %d delivered again (got %v so far)", m.Offset, append(got, m.Offset))
		}
		got = append(got, m.Offset)
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[2 5 8]" {
		t.Fatalf("delivered again %v, want [2 5 8]", got)
	}
	noMore(t, ss, time.Second)
	ss.Close(true)
	s.Close(context.Background()) // commits on leaving
	waitCommitted(t, group, topic, 0, 10, "")
}

// TestEngineLostAcksYieldToNewerCommit: a member cut off loses its
// partition and its session expires; while it is away the group's offset
// is set elsewhere. When the partition comes back, that commit stands: the
// member must not go on from (nor commit) what it kept.
func TestEngineLostAcksYieldToNewerCommit(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.CommitInterval = time.Hour
	cfg.Consume.SessionTimeout = 6 * time.Second
	s := startEngine(t, cfg)
	cut := newCutter(t)
	s.memberOpts = []kgo.Opt{kgo.Dialer(cut.dial)}
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 6, 0)

	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close(true)
	for _, m := range take(t, ss, 6, 30*time.Second) {
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	cut.set(true)
	waitOwned(t, s, group, topic, "[]", 60*time.Second)
	// Once the session expired the group is empty, and a commit from
	// outside it is accepted.
	adm := kadm.NewClient(kit.Client(t))
	eventually(t, 60*time.Second, func() error {
		var os kadm.Offsets
		os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1})
		resp, err := adm.CommitOffsets(context.Background(), group, os)
		if err == nil {
			err = resp.Error()
		}
		return err
	})
	cut.set(false)
	waitOwned(t, s, group, topic, "[0]", 60*time.Second)
	if m := take(t, ss, 1, 30*time.Second)[0]; m.Offset != 1 {
		t.Fatalf("after the partition came back got offset %d first, want 1 (the newer commit)", m.Offset)
	}
	if at, meta := committed(t, group, topic, 0); at != 1 || meta != "" {
		t.Fatalf("committed %d %q after the partition came back, want the newer commit 1", at, meta)
	}
}

// TestRestoreTrustsOwnCommit: a partition that comes back committed at
// what the member last committed, or at a commit of its own that failed
// (its answer lost in the outage, yet stored), goes on from what the
// member kept; committed anywhere else, it does not.
func TestRestoreTrustsOwnCommit(t *testing.T) {
	m := &member{s: &Service{logger: slog.New(slog.DiscardHandler)}}
	acked := []sparseacks.Range{{From: 8, To: 9}}
	for _, tc := range []struct {
		name          string
		committed     int64
		meta          string
		fetched, want bool
	}{
		{"unchanged", 3, "", true, true},
		{"own failed commit", 5, "x", true, true},
		{"someone else's", 6, "", true, false},
		{"same offset, other metadata", 5, "y", true, false},
		{"commit not read", 3, "", false, false},
	} {
		ps := &partState{next: tc.committed, committed: tc.committed, committedMeta: tc.meta}
		k := &keptAcks{committed: 3, tried: &OffsetTarget{Offset: 5, Metadata: "x"}, base: 7, acked: acked, readHigh: 10}
		m.restoreLocked(ps, k, tc.fetched)
		if got := ps.next == 7 && ps.dirty && len(ps.preAcked) == 1; got != tc.want {
			t.Errorf("%s: restored %v (next %d), want %v", tc.name, got, ps.next, tc.want)
		}
	}
}

// restartEnv names a shell command that stops the real test broker, waits
// out an outage and starts it again with its data, returning once it
// listens; TestEngineAcksSurviveBrokerRestart runs only when it is set.
const restartEnv = "FERRY_TEST_BROKER_RESTART"

// TestEngineAcksSurviveBrokerRestart is the outage the cut-off tests
// model, on a real broker: acknowledgements not yet committed when the
// broker goes down must not be lost, so no acknowledged message is
// delivered again once it is back.
func TestEngineAcksSurviveBrokerRestart(t *testing.T) {
	restart := os.Getenv(restartEnv)
	if restart == "" || !testkit.Real() {
		t.Skipf("set %s (and FERRY_TEST_BROKERS) to restart the real broker", restartEnv)
	}
	cfg := engineConfig()
	cfg.Consume.CommitInterval = time.Hour // nothing committed before the outage
	s := startEngine(t, cfg)
	topic := kit.Topic(t, 3, nil)
	group := testkit.Name(t, "group")
	for p := int32(0); p < 3; p++ {
		produceN(t, s, topic, 20, p)
	}
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close(true)
	acked := map[string]bool{}
	for _, m := range take(t, ss, 60, 60*time.Second) {
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
		acked[fmt.Sprint(m.Partition, "/", m.Offset)] = true
	}
	out, err := exec.Command("sh", "-c", restart).CombinedOutput()
	if err != nil {
		t.Fatalf("restarting the broker: %v: %s", err, out)
	}
	// New records after the outage must come, and nothing acknowledged.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for p := int32(0); p < 3; p++ {
		for {
			_, err := s.Produce(ctx, "", topic, Record{Value: []byte("after"), Partition: p})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("producing after the restart: %v", err)
			}
		}
	}
	for got := 0; got < 3; {
		m, err := ss.Next(ctx)
		if err != nil {
			t.Fatalf("after %d new records: %v", got, err)
		}
		if acked[fmt.Sprint(m.Partition, "/", m.Offset)] {
			t.Fatalf("acknowledged partition %d offset %d delivered again after the broker restart", m.Partition, m.Offset)
		}
		if string(m.Value) == "after" {
			got++
		}
		if err := ss.Ack(m.Partition, m.Offset); err != nil && status.Code(err) != codes.FailedPrecondition {
			t.Fatal(err)
		}
	}
}

// TestEngineAcksSurviveFailedRevokeCommit: a partition revoked in a
// rebalance while commits fail keeps its acknowledgements; when it comes
// back unchanged, no acknowledged message is delivered again. It runs on
// an in-process broker of its own, whose commits it can make fail.
func TestEngineAcksSurviveFailedRevokeCommit(t *testing.T) {
	topic, group := testkit.Name(t, "topic"), testkit.Name(t, "group")
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	var failCommits atomic.Bool
	fake.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if !failCommits.Load() {
			return nil, nil, false
		}
		creq := req.(*kmsg.OffsetCommitRequest)
		resp := creq.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range creq.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.InvalidCommitOffsetSize.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	logger := slog.New(slog.DiscardHandler)
	cc := config.Cluster{Name: testClusterName, ClientID: "ferry-test", DialTimeout: 10 * time.Second,
		Producer: config.Producer{MaxBufferedRecords: 1000, Compression: "none", DeliveryTimeout: 30 * time.Second}}
	newService := func() *Service {
		cfg := engineConfig()
		cfg.Consume.CommitInterval = time.Hour
		c := kafka.NewCluster(cc, fake.ListenAddrs(), logger)
		s := New(cfg, map[string]*kafka.Cluster{testClusterName: c}, []string{testClusterName}, logger)
		t.Cleanup(func() { s.Close(context.Background()); c.Close(context.Background()) })
		return s
	}
	a := newService()
	for p := int32(0); p < 2; p++ {
		produceN(t, a, topic, 5, p)
	}
	sa, err := a.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close(true)
	acked := map[string]bool{}
	for _, m := range take(t, sa, 10, 30*time.Second) {
		if m.Offset == 4 {
			continue // the last of each partition stays unacknowledged
		}
		if err := sa.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
		acked[fmt.Sprint(m.Partition, "/", m.Offset)] = true
	}

	// A second instance joins: one partition is revoked from the first,
	// whose commit of it fails. The second leaves again without having
	// committed anything, and the partition comes back.
	failCommits.Store(true)
	b := newService()
	sb, err := b.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	waitOwnedCount(t, a, group, topic, 1)
	sb.Close(true)
	b.Close(context.Background())
	failCommits.Store(false)
	waitOwned(t, a, group, topic, "[0 1]", 60*time.Second)

	// Only the revoked partition's unacknowledged message comes again
	// (the other's is still out, waiting for its ack timeout).
	m := take(t, sa, 1, 30*time.Second)[0]
	if acked[fmt.Sprint(m.Partition, "/", m.Offset)] || m.Offset != 4 {
		t.Fatalf("partition %d offset %d delivered again, want only the unacknowledged offset 4", m.Partition, m.Offset)
	}
	noMore(t, sa, time.Second)
}

// waitOwnedCount waits until the instance's member owns n partitions.
func waitOwnedCount(t testing.TB, s *Service, group, topic string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(s.owned(group, topic)) != n {
		if time.Now().After(deadline) {
			t.Fatalf("owned partitions %s, want %d of them", s.ownedPartitions(group, topic), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
