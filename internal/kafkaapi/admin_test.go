package kafkaapi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
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

// This file's helpers (kit, newTestService, testContext, wantCode,
// eventually) are meant for every test of the package.

// kit is the brokers the package's tests run against: those
// FERRY_TEST_BROKERS names, else one embedded broker with three partitions
// per auto-created topic, shared by every test of the run.
var kit = testkit.NewBroker(3)

// testClusterName is the one cluster of a test Service.
const testClusterName = "default"

// newTestService returns a Service over the test brokers with cfg (nil:
// config.Default's), closed when the test ends. Its one cluster is
// "default", also reachable as "".
func newTestService(t testing.TB, cfg *config.KafkaAPI) *Service {
	t.Helper()
	if cfg == nil {
		d := config.Default().KafkaAPI
		cfg = &d
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("FERRY_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The defaults config.applyDefaults fills in.
	cc := config.Cluster{
		Name:        testClusterName,
		ClientID:    "ferry",
		DialTimeout: 10 * time.Second,
		Producer: config.Producer{
			MaxBufferedRecords: 100_000,
			Compression:        "none",
			DeliveryTimeout:    30 * time.Second,
		},
	}
	cc.TLS, cc.SASL = kit.Security(t)
	c := kafka.NewCluster(cc, kit.Seeds(t), logger)
	s := New(*cfg, map[string]*kafka.Cluster{testClusterName: c}, []string{testClusterName}, logger)
	t.Cleanup(func() { s.Close(context.Background()); c.Close(context.Background()) })
	return s
}

// testContext returns a context that ends with the test or after a
// minute, whichever is first.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails t unless err is a gRPC status with code whose message
// contains every one of parts.
func wantCode(t testing.TB, what string, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: error %v (%T) is not a gRPC status", what, err, err)
	}
	if st.Code() != code {
		t.Fatalf("%s: code %v (%q), want %v", what, st.Code(), st.Message(), code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("%s: message %q does not mention %q", what, st.Message(), p)
		}
	}
}

// eventually calls check until it returns nil, failing t with its last
// error after d.
func eventually(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAdminTopics(t *testing.T) {
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := kit.Topic(t, 3, map[string]*string{"retention.ms": kadm.StringPtr("3600000")})

	for _, internal := range []bool{false, true} {
		names, err := s.ListTopics(ctx, "", internal)
		if err != nil {
			t.Fatalf("ListTopics(internal=%v): %v", internal, err)
		}
		if !slices.IsSorted(names) {
			t.Errorf("ListTopics(internal=%v) is not sorted: %q", internal, names)
		}
		if !slices.Contains(names, topic) {
			t.Errorf("ListTopics(internal=%v) misses %s", internal, topic)
		}
		if !internal && slices.Contains(names, "__consumer_offsets") {
			t.Errorf("ListTopics(internal=false) lists __consumer_offsets")
		}
	}

	info, err := s.DescribeTopic(ctx, testClusterName, topic, false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Topic != topic || info.Configs != nil {
		t.Errorf("DescribeTopic without configs = %+v", info)
	}
	if len(info.Partitions) != 3 {
		t.Fatalf("DescribeTopic partitions = %+v, want 3", info.Partitions)
	}
	for i, p := range info.Partitions {
		if p.Partition != int32(i) {
			t.Errorf("partition %d is number %d; want them sorted", i, p.Partition)
		}
		if p.Leader < 0 || len(p.Replicas) != 1 || p.Replicas[0] != p.Leader || !slices.Contains(p.ISR, p.Leader) {
			t.Errorf("partition %+v: want the leader as the one replica, in sync", p)
		}
	}

	info, err = s.DescribeTopic(ctx, "", topic, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Partitions) != 3 {
		t.Errorf("DescribeTopic with configs: partitions = %+v, want 3", info.Partitions)
	}
	if !slices.IsSortedFunc(info.Configs, func(a, b ConfigEntry) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("configs are not sorted by name: %+v", info.Configs)
	}
	entries := map[string]ConfigEntry{}
	for _, e := range info.Configs {
		entries[e.Name] = e
	}
	for _, want := range []ConfigEntry{
		{Name: "retention.ms", Value: "3600000", Source: "DYNAMIC_TOPIC_CONFIG"},
		// Neither kfake nor a broker started by scripts/kafka.sh sets
		// it, so it is Kafka's default.
		{Name: "cleanup.policy", Value: "delete", Source: "DEFAULT_CONFIG"},
	} {
		if got := entries[want.Name]; got != want {
			t.Errorf("config %s = %+v, want %+v", want.Name, got, want)
		}
	}
}

// TestAdminTopicCreatedAfterLookup checks that a topic is found at once
// after a lookup that did not find it: the admin client must not answer
// from the "unknown" it remembers.
func TestAdminTopicCreatedAfterLookup(t *testing.T) {
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := testkit.Name(t, "topic")
	_, err := s.DescribeTopic(ctx, "", topic, false)
	wantCode(t, "DescribeTopic before creating", err, codes.NotFound, topic)

	kit.CreateTopic(t, topic, 2, nil)
	// A real broker may need a moment to elect the new partitions'
	// leaders, but not the five seconds franz-go caches metadata for.
	eventually(t, 3*time.Second, func() error {
		offs, err := s.GetOffsets(ctx, "", testkit.Name(t, "group"), topic)
		if err != nil {
			return err
		}
		if len(offs) != 2 {
			return fmt.Errorf("GetOffsets = %+v, want 2 partitions", offs)
		}
		return nil
	})
}

func TestAdminErrors(t *testing.T) {
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := kit.Topic(t, 1, nil)
	missingTopic := testkit.Name(t, "missing-topic")
	missingGroup := testkit.Name(t, "missing-group")

	for _, tc := range []struct {
		name  string
		call  func() error
		code  codes.Code
		parts []string
	}{
		{"DescribeTopic unknown topic", func() error { _, err := s.DescribeTopic(ctx, "", missingTopic, true); return err },
			codes.NotFound, []string{missingTopic, testClusterName}},
		{"TopicConsumers unknown topic", func() error { _, err := s.TopicConsumers(ctx, "", missingTopic, ""); return err },
			codes.NotFound, []string{missingTopic, testClusterName}},
		{"GetOffsets unknown topic", func() error { _, err := s.GetOffsets(ctx, "", missingGroup, missingTopic); return err },
			codes.NotFound, []string{missingTopic, testClusterName}},
		{"DescribeGroup unknown group", func() error { _, err := s.DescribeGroup(ctx, "", missingGroup); return err },
			codes.NotFound, []string{missingGroup, testClusterName}},
		{"DescribeTopic no topic", func() error { _, err := s.DescribeTopic(ctx, "", "", false); return err },
			codes.InvalidArgument, nil},
		{"DescribeGroup no group", func() error { _, err := s.DescribeGroup(ctx, "", ""); return err },
			codes.InvalidArgument, nil},
		{"GetOffsets no group", func() error { _, err := s.GetOffsets(ctx, "", "", topic); return err },
			codes.InvalidArgument, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, tc.call(), tc.code, tc.parts...)
		})
	}

	// Every call names the cluster it could not find.
	for name, call := range map[string]func() error{
		"ListTopics":     func() error { _, err := s.ListTopics(ctx, "nope", false); return err },
		"DescribeTopic":  func() error { _, err := s.DescribeTopic(ctx, "nope", topic, false); return err },
		"ListGroups":     func() error { _, err := s.ListGroups(ctx, "nope"); return err },
		"DescribeGroup":  func() error { _, err := s.DescribeGroup(ctx, "nope", missingGroup); return err },
		"TopicConsumers": func() error { _, err := s.TopicConsumers(ctx, "nope", topic, ""); return err },
		"GetOffsets":     func() error { _, err := s.GetOffsets(ctx, "nope", missingGroup, topic); return err },
	} {
		wantCode(t, name+" on an unknown cluster", call(), codes.InvalidArgument, `"nope"`)
	}

	// A group nobody joined or committed for has no consumers and no
	// commits; neither is an error.
	consumers, err := s.TopicConsumers(ctx, "", topic, missingGroup)
	if err != nil || len(consumers) != 0 {
		t.Errorf("TopicConsumers of an unknown group = %v, %v; want none", consumers, err)
	}

	s.Close(context.Background())
	_, err = s.ListTopics(ctx, "", false)
	wantCode(t, "ListTopics after Close", err, codes.Unavailable)
}

// TestAdminUnreachableBroker checks that a cluster nobody answers for is
// UNAVAILABLE.
func TestAdminUnreachableBroker(t *testing.T) {
	kit.CheckLeaks(t)
	logger := slog.New(slog.DiscardHandler)
	// A port just released by a listener of our own is very likely
	// closed.
	e, err := kafka.StartEmbedded(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	addrs := e.Addrs()
	e.Close(context.Background())
	cc := config.Cluster{Name: testClusterName, ClientID: "ferry", DialTimeout: time.Second}
	c := kafka.NewCluster(cc, addrs, logger)
	s := New(config.Default().KafkaAPI, map[string]*kafka.Cluster{testClusterName: c}, []string{testClusterName}, logger)
	t.Cleanup(func() { s.Close(context.Background()); c.Close(context.Background()) })

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err = s.ListTopics(ctx, "", false)
	wantCode(t, "ListTopics of an unreachable cluster", err, codes.Unavailable, testClusterName)
}

func TestOffsets(t *testing.T) {
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := kit.Topic(t, 3, nil)
	group := testkit.Name(t, "group")

	// Partition 0 gets five records, 1 gets three, 2 none.
	cl := kit.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p, n := range []int{5, 3, 0} {
		for i := range n {
			r := &kgo.Record{Topic: topic, Partition: int32(p), Value: fmt.Appendf(nil, "v%d", i)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("producing to partition %d: %v", p, err)
			}
		}
	}
	adm := kadm.NewClient(cl)
	// Partition 1's log now starts at 1.
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: topic, Partition: 1, At: 1, LeaderEpoch: -1})
	if resp, err := adm.DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("deleting records: %v %v", err, resp.Error())
	}

	// Before any commit, lag is the whole log.
	got, err := s.GetOffsets(ctx, "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := []PartitionOffsets{
		{Partition: 0, Begin: 0, End: 5, Committed: -1, Lag: 5},
		{Partition: 1, Begin: 1, End: 3, Committed: -1, Lag: 2},
		{Partition: 2, Begin: 0, End: 0, Committed: -1, Lag: 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GetOffsets without commits:\n got %+v\nwant %+v", got, want)
	}

	// Committed 1 with 2 and 4 acknowledged, in Kafka-Pixy's encoding.
	pixyMeta := sparseacks.Encode(1, []sparseacks.Range{{From: 2, To: 3}, {From: 4, To: 5}})
	var commit kadm.Offsets
	commit.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1, Metadata: pixyMeta})
	// Some other client's metadata: shown, but no sparse acks.
	commit.Add(kadm.Offset{Topic: topic, Partition: 1, At: 2, LeaderEpoch: -1, Metadata: "not pixy's!"})
	// A commit beyond the end (set by hand, say) is no lag.
	commit.Add(kadm.Offset{Topic: topic, Partition: 2, At: 7, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(ctx, group, commit); err != nil {
		t.Fatalf("committing: %v", err)
	}
	got, err = s.GetOffsets(ctx, testClusterName, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	want = []PartitionOffsets{
		{Partition: 0, Begin: 0, End: 5, Committed: 1, Lag: 4, Metadata: pixyMeta, SparseAcks: "2-3,4-5"},
		{Partition: 1, Begin: 1, End: 3, Committed: 2, Lag: 1, Metadata: "not pixy's!"},
		{Partition: 2, Begin: 0, End: 0, Committed: 7, Lag: 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GetOffsets after commits:\n got %+v\nwant %+v", got, want)
	}
	if pixyMeta != "BBBB" {
		t.Errorf("sparse acks metadata %q, want Kafka-Pixy's %q", pixyMeta, "BBBB")
	}

	// The group exists now, with commits and no members.
	info, err := s.DescribeGroup(ctx, "", group)
	if err != nil {
		t.Fatal(err)
	}
	if info.Group != group || info.State != "Empty" || len(info.Members) != 0 {
		t.Errorf("DescribeGroup of a group with commits only = %+v, want Empty without members", info)
	}
	if groups, err := s.ListGroups(ctx, ""); err != nil || !slices.Contains(groups, group) {
		t.Errorf("ListGroups = %q, %v; want it to list %s", groups, err, group)
	}
	consumers, err := s.TopicConsumers(ctx, "", topic, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := consumers[group]; ok {
		t.Errorf("TopicConsumers lists %s, which has no members: %v", group, consumers)
	}
}

func TestAdminGroups(t *testing.T) {
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := kit.Topic(t, 3, nil)
	other := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")

	// Two members of the group share the topic's partitions.
	for i := range 2 {
		cl := kit.Client(t,
			kgo.ClientID(fmt.Sprintf("admin-test-%d", i)),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topic),
			kgo.SessionTimeout(6*time.Second),
		)
		pollInBackground(t, cl)
	}

	var info GroupInfo
	eventually(t, 30*time.Second, func() error {
		var err error
		if info, err = s.DescribeGroup(ctx, "", group); err != nil {
			return err
		}
		if info.State != "Stable" || len(info.Members) != 2 {
			return fmt.Errorf("group %s is %s with %d members, want Stable with 2", group, info.State, len(info.Members))
		}
		var all []int32
		for _, m := range info.Members {
			if len(m.Assigned[topic]) == 0 {
				return fmt.Errorf("member %s has no partitions yet: %+v", m.MemberID, info)
			}
			all = append(all, m.Assigned[topic]...)
		}
		slices.Sort(all)
		if !slices.Equal(all, []int32{0, 1, 2}) {
			return fmt.Errorf("members hold partitions %v between them, want each of 0, 1, 2 once", all)
		}
		return nil
	})
	if info.Group != group || info.Protocol == "" {
		t.Errorf("DescribeGroup = %+v, want the group and its protocol", info)
	}
	var clientIDs []string
	for _, m := range info.Members {
		clientIDs = append(clientIDs, m.ClientID)
		if m.MemberID == "" || m.ClientHost == "" {
			t.Errorf("member %+v lacks an id or host", m)
		}
		if !slices.IsSorted(m.Assigned[topic]) {
			t.Errorf("member %s partitions %v are not sorted", m.MemberID, m.Assigned[topic])
		}
	}
	slices.Sort(clientIDs)
	if !slices.Equal(clientIDs, []string{"admin-test-0", "admin-test-1"}) {
		t.Errorf("member client ids %q", clientIDs)
	}

	groups, err := s.ListGroups(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(groups, group) || !slices.IsSorted(groups) {
		t.Errorf("ListGroups = %q, want it sorted and with %s", groups, group)
	}

	// The same members and partitions as DescribeGroup, all groups or
	// just this one.
	wantMembers := map[string][]int32{}
	for _, m := range info.Members {
		wantMembers[m.MemberID] = m.Assigned[topic]
	}
	all, err := s.TopicConsumers(ctx, "", topic, "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(all[group], wantMembers) {
		t.Errorf("TopicConsumers(all groups)[%s] = %v, want %v", group, all[group], wantMembers)
	}
	one, err := s.TopicConsumers(ctx, testClusterName, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]map[string][]int32{group: wantMembers}; !reflect.DeepEqual(one, want) {
		t.Errorf("TopicConsumers(%s) = %v, want %v", group, one, want)
	}
	// Nobody in the group consumes the other topic.
	none, err := s.TopicConsumers(ctx, "", other, group)
	if err != nil || len(none) != 0 {
		t.Errorf("TopicConsumers of a topic the group does not read = %v, %v; want none", none, err)
	}
}

// TestAdminConsumerProtocolGroup checks a group on KIP-848's consumer
// protocol, which DescribeGroups does not describe on Kafka 4.
func TestAdminConsumerProtocolGroup(t *testing.T) {
	if !testkit.Real() {
		// kfake answers DescribeGroups for such a group as a classic
		// group without members, where Kafka says it is not a classic
		// group; only a real broker shows the fallback at work.
		t.Skip("needs a real broker (FERRY_TEST_BROKERS)")
	}
	kit.CheckLeaks(t)
	s := newTestService(t, nil)
	ctx := testContext(t)
	topic := kit.Topic(t, 3, nil)
	group := testkit.Name(t, "group")
	cl := kit.Client(t,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.ServerSideBalancer(),
	)
	pollInBackground(t, cl)

	eventually(t, 30*time.Second, func() error {
		info, err := s.DescribeGroup(ctx, "", group)
		if err != nil {
			return err
		}
		if len(info.Members) != 1 || !slices.Equal(info.Members[0].Assigned[topic], []int32{0, 1, 2}) {
			return fmt.Errorf("DescribeGroup = %+v, want one member with partitions 0, 1, 2", info)
		}
		consumers, err := s.TopicConsumers(ctx, "", topic, "")
		if err != nil {
			return err
		}
		if want := map[string][]int32{info.Members[0].MemberID: {0, 1, 2}}; !reflect.DeepEqual(consumers[group], want) {
			return fmt.Errorf("TopicConsumers[%s] = %v, want %v", group, consumers[group], want)
		}
		if groups, err := s.ListGroups(ctx, ""); err != nil || !slices.Contains(groups, group) {
			return fmt.Errorf("ListGroups = %q, %v; want it to list %s", groups, err, group)
		}
		return nil
	})
}

// pollInBackground polls cl until the test ends, so that its group
// membership stays alive; the goroutine ends before cl is closed.
func pollInBackground(t testing.TB, cl *kgo.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	// Cleanups run last-in first-out: this one before cl.Close.
	t.Cleanup(func() { cancel(); <-done })
}
