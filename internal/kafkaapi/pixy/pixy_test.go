package pixy

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestProduceConsume produces every kind of Kafka-Pixy message and reads
// each back with ConsumeNAck: keys (set, empty, undefined), headers, sync and
// async.
func TestProduceConsume(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	ctx := testkit.Context(t, 30*time.Second)

	keyed, err := f.client.Produce(ctx, &kafkapixy.ProdRq{
		Topic:    topic,
		KeyValue: []byte("k1"),
		Message:  []byte("m1"),
		Headers:  []*kafkapixy.RecordHeader{{Key: "h1", Value: []byte("v1")}, {Key: "h2"}},
	})
	if err != nil {
		t.Fatalf("producing keyed: %v", err)
	}
	if keyed.GetPartition() < 0 || keyed.GetPartition() > 2 || keyed.GetOffset() < 0 {
		t.Fatalf("sync produce answered %v, want a partition of 0..2 and an offset", keyed)
	}
	again, err := f.client.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, KeyValue: []byte("k1"), Message: []byte("m1b")})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetPartition() != keyed.GetPartition() || again.GetOffset() != keyed.GetOffset()+1 {
		t.Fatalf("the same key went to %v after %v, want the next offset of the same partition", again, keyed)
	}
	undefined, err := f.client.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, KeyUndefined: true, Message: []byte("m2")})
	if err != nil {
		t.Fatalf("producing without key: %v", err)
	}
	// An empty key_value without key_undefined is the empty key: it hashes,
	// so every such message lands in one partition.
	var emptyKey []*kafkapixy.ProdRs
	for range 5 {
		rs, err := f.client.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, Message: []byte("m3")})
		if err != nil {
			t.Fatalf("producing with the empty key: %v", err)
		}
		emptyKey = append(emptyKey, rs)
	}
	for _, rs := range emptyKey[1:] {
		if rs.GetPartition() != emptyKey[0].GetPartition() {
			t.Fatalf("empty-key messages went to partitions %v, want one partition", emptyKey)
		}
	}
	async, err := f.client.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, KeyValue: []byte("k4"), Message: []byte("m4"), AsyncMode: true})
	if err != nil {
		t.Fatalf("producing async: %v", err)
	}
	if async.GetPartition() != -1 || async.GetOffset() != -1 {
		t.Fatalf("async produce answered %v, want partition -1 offset -1", async)
	}

	// The records as Kafka stores them: the empty key is a key, not null.
	cl := kit.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var recs []*kgo.Record
	for len(recs) < 9 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of 9 records", len(recs))
		}
		recs = append(recs, fs.Records()...)
	}
	for _, r := range recs {
		switch string(r.Value) {
		case "m2":
			if r.Key != nil {
				t.Errorf("key_undefined wrote key %q, want null", r.Key)
			}
		case "m3":
			if r.Key == nil || len(r.Key) != 0 {
				t.Errorf("the empty key was written as %v, want an empty, non-null key", r.Key)
			}
		}
	}

	group := testkit.Name(t, "group")
	got := map[string]*kafkapixy.ConsRs{}
	for range 9 {
		rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true})
		got[string(rs.GetMessage())] = rs
	}
	m1 := got["m1"]
	if m1 == nil || string(m1.GetKeyValue()) != "k1" || m1.GetKeyUndefined() ||
		m1.GetPartition() != keyed.GetPartition() || m1.GetOffset() != keyed.GetOffset() {
		t.Errorf("m1 consumed as %v, want key k1 at %v", m1, keyed)
	}
	if m1 != nil {
		hs := m1.GetHeaders()
		if len(hs) != 2 || hs[0].GetKey() != "h1" || string(hs[0].GetValue()) != "v1" || hs[1].GetKey() != "h2" || len(hs[1].GetValue()) != 0 {
			t.Errorf("m1 headers are %v, want h1=v1, h2=\"\"", hs)
		}
	}
	if m2 := got["m2"]; m2 == nil || !m2.GetKeyUndefined() || m2.GetPartition() != undefined.GetPartition() || m2.GetOffset() != undefined.GetOffset() {
		t.Errorf("m2 consumed as %v, want key_undefined at %v", m2, undefined)
	}
	if m3 := got["m3"]; m3 == nil || m3.GetKeyUndefined() || len(m3.GetKeyValue()) != 0 || m3.GetPartition() != emptyKey[0].GetPartition() {
		t.Errorf("m3 consumed as %v, want the empty key, defined", m3)
	}
	if m4 := got["m4"]; m4 == nil || string(m4.GetKeyValue()) != "k4" {
		t.Errorf("the async message consumed as %v, want key k4", m4)
	}
	f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
}

// TestAckModes walks a Kafka-Pixy client's consume loop: no_ack first, then
// each poll acknowledges the previous message, auto_ack, and Ack; the
// committed offsets show what was acknowledged, sparse acks included.
func TestAckModes(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 1, "a", "b", "c")

	first := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
	if first.GetPartition() != 1 || first.GetOffset() != 0 || string(first.GetMessage()) != "a" {
		t.Fatalf("first message %v, want a at 1/0", first)
	}
	second := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AckPartition: 1, AckOffset: 0})
	if second.GetOffset() != 1 {
		t.Fatalf("second message %v, want offset 1", second)
	}
	third := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true})
	if third.GetOffset() != 2 {
		t.Fatalf("third message %v, want offset 2", third)
	}
	// Acknowledged: 0 (piggy-backed) and 2 (auto); 1 is still out.
	po := f.waitOffset(t, topic, group, 1, 1, "1-2") // offset 2, relative to the committed 1
	if po.GetBegin() != 0 || po.GetEnd() != 3 || po.GetCount() != 3 || po.GetLag() != 2 {
		t.Errorf("partition 1 offsets %v, want begin 0 end 3 count 3 lag 2", po)
	}

	// An ack of an offset never delivered is refused before polling.
	start := time.Now()
	_, err := f.client.ConsumeNAck(testkit.Context(t, 10*time.Second), &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AckPartition: 1, AckOffset: 100})
	wantCode(t, "piggy-backed ack of offset 100", err, codes.InvalidArgument, "")
	if d := time.Since(start); d >= testLongPoll {
		t.Errorf("the bad ack was refused after %v, want before polling", d)
	}
	_, err = f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 1, Offset: 100})
	wantCode(t, "Ack of offset 100", err, codes.InvalidArgument, "")
	_, err = f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 1, Offset: -1})
	wantCode(t, "Ack of offset -1", err, codes.InvalidArgument, "offset")

	if _, err := f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 1, Offset: 1}); err != nil {
		t.Fatalf("Ack(1/1): %v", err)
	}
	po = f.waitOffset(t, topic, group, 1, 3, "")
	if po.GetLag() != 0 {
		t.Errorf("lag %d after acknowledging everything, want 0", po.GetLag())
	}
	// A Kafka-Pixy client repeats its last ack after an empty poll; the
	// ack is settled and committed by then, and that is no error.
	f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AckPartition: 1, AckOffset: 2})
	f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AckPartition: 1, AckOffset: 2})

	// An ack of a partition this instance does not own is FAILED_PRECONDITION
	// on its own, but does not fail the poll it rides on: the message is
	// redelivered by the partition's owner, and a Kafka-Pixy client would
	// stop on the error.
	f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AckPartition: 7, AckOffset: 0})
	_, err = f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 7, Offset: 0})
	wantCode(t, "Ack of partition 7", err, codes.FailedPrecondition, "")
	_, err = f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: testkit.Name(t, "other"), Partition: 0, Offset: 0})
	wantCode(t, "Ack in a group not consumed here", err, codes.FailedPrecondition, "")
}

// TestNoFlagsAcksNothing checks Ferry's fix of Kafka-Pixy's bug: a request
// with no ack flag and both ack fields zero does not acknowledge partition 0
// offset 0.
func TestNoFlagsAcksNothing(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 0, "first", "second")

	rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
	if rs.GetPartition() != 0 || rs.GetOffset() != 0 {
		t.Fatalf("got %v, want 0/0", rs)
	}
	// Without flags, the request's ack fields (0/0, their zero values)
	// acknowledge nothing.
	rs = f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group})
	if rs.GetPartition() != 0 || rs.GetOffset() != 1 {
		t.Fatalf("got %v, want 0/1", rs)
	}
	ctx := testkit.Context(t, 10*time.Second)
	if _, err := f.client.Ack(ctx, &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 0, Offset: 1}); err != nil {
		t.Fatal(err)
	}
	// A commit after both polls: 0/1 acknowledged, 0/0 still not (were it
	// acknowledged too, the committed offset would be 2).
	f.waitOffset(t, topic, group, 0, 0, "1-2")
	if _, err := f.client.Ack(ctx, &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 0, Offset: 0}); err != nil {
		t.Fatal(err)
	}
	f.waitOffset(t, topic, group, 0, 2, "")
}

// TestSparseAcksEncoding checks the spec's example: committed 0, acks at 1
// and 3 → metadata "BBBB", sparse_acks "1-2,3-4", Kafka-Pixy's encoding.
func TestSparseAcksEncoding(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 0, "0", "1", "2", "3", "4")
	for i := range int64(5) {
		rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
		if rs.GetOffset() != i {
			t.Fatalf("delivery %d is offset %d", i, rs.GetOffset())
		}
	}
	for _, off := range []int64{3, 1} {
		if _, err := f.client.Ack(testkit.Context(t, 10*time.Second), &kafkapixy.AckRq{Topic: topic, Group: group, Partition: 0, Offset: off}); err != nil {
			t.Fatalf("Ack(0/%d): %v", off, err)
		}
	}
	po := f.waitOffset(t, topic, group, 0, 0, "1-2,3-4")
	if po.GetMetadata() != "BBBB" {
		t.Errorf("metadata %q, want Kafka-Pixy's \"BBBB\"", po.GetMetadata())
	}
	if po.GetLag() != 5 || po.GetCount() != 5 {
		t.Errorf("lag %d count %d, want 5 and 5", po.GetLag(), po.GetCount())
	}
}

// TestSetOffsets checks that SetOffsets moves a member that is consuming
// (Kafka-Pixy ignored it, issue #163), and that a group moving from
// Kafka-Pixy keeps its sparse acks.
func TestSetOffsets(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	produceTo(t, topic, 0, "0", "1", "2", "3", "4", "5")

	t.Run("running", func(t *testing.T) {
		group := testkit.Name(t, "group")
		if rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true}); rs.GetOffset() != 0 {
			t.Fatalf("first message %v, want offset 0", rs)
		}
		_, err := f.client.SetOffsets(testkit.Context(t, 20*time.Second), &kafkapixy.SetOffsetsRq{
			Topic: topic, Group: group, Offsets: []*kafkapixy.PartitionOffset{{Partition: 0, Offset: 4}},
		})
		if err != nil {
			t.Fatalf("SetOffsets: %v", err)
		}
		for _, want := range []int64{4, 5} {
			if rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true}); rs.GetOffset() != want {
				t.Fatalf("after SetOffsets(4) got offset %d, want %d", rs.GetOffset(), want)
			}
		}
		f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
		f.waitOffset(t, topic, group, 0, 6, "")
	})

	t.Run("from-pixy", func(t *testing.T) {
		// Committed 1 with 2 and 4 acknowledged, as Kafka-Pixy wrote it:
		// [2,3) and [4,5), each relative to the previous end.
		group := testkit.Name(t, "group")
		_, err := f.client.SetOffsets(testkit.Context(t, 20*time.Second), &kafkapixy.SetOffsetsRq{
			Topic: topic, Group: group, Offsets: []*kafkapixy.PartitionOffset{{Partition: 0, Offset: 1, Metadata: "BBBB"}},
		})
		if err != nil {
			t.Fatalf("SetOffsets: %v", err)
		}
		po := f.offsets(t, topic, group)[0]
		if po.GetOffset() != 1 || po.GetMetadata() != "BBBB" || po.GetSparseAcks() != "1-2,3-4" {
			t.Errorf("after SetOffsets: %v, want offset 1, metadata BBBB, sparse_acks 1-2,3-4 (relative to 1)", po)
		}
		for _, want := range []int64{1, 3, 5} {
			if rs := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true}); rs.GetOffset() != want {
				t.Fatalf("got offset %d, want %d (2 and 4 were acknowledged)", rs.GetOffset(), want)
			}
		}
		f.expectEmpty(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
	})
}

// TestTopicsAndMetadata covers ListTopics and GetTopicMetadata: the
// configuration is the topic's own overrides only, version 1.
func TestTopicsAndMetadata(t *testing.T) {
	f := newFixture(t)
	retention := "3600000"
	topic := newTopic(t, map[string]*string{"retention.ms": &retention})
	ctx := testkit.Context(t, 30*time.Second)
	wantConfig := map[string]string{"retention.ms": retention}

	checkPartitions := func(what string, ps []*kafkapixy.PartitionMetadata) {
		t.Helper()
		if len(ps) != 3 {
			t.Fatalf("%s: %d partitions, want 3", what, len(ps))
		}
		for i, p := range ps {
			if p.GetPartition() != int32(i) || p.GetLeader() < 0 || len(p.GetReplicas()) != 1 || len(p.GetIsr()) != 1 ||
				p.GetReplicas()[0] != p.GetLeader() {
				t.Errorf("%s: partition %d is %v", what, i, p)
			}
		}
	}
	checkConfig := func(what string, tm *kafkapixy.GetTopicMetadataRs) {
		t.Helper()
		if tm.GetVersion() != 1 || len(tm.GetConfig()) != 1 || tm.GetConfig()["retention.ms"] != retention {
			t.Errorf("%s: version %d config %v, want version 1 config %v", what, tm.GetVersion(), tm.GetConfig(), wantConfig)
		}
	}

	rs, err := f.client.ListTopics(ctx, &kafkapixy.ListTopicRq{})
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	tm := rs.GetTopics()[topic]
	if tm == nil {
		t.Fatalf("ListTopics lacks %s", topic)
	}
	checkConfig("ListTopics", tm)
	if len(tm.GetPartitions()) != 0 {
		t.Errorf("ListTopics without with_partitions listed partitions %v", tm.GetPartitions())
	}
	for name := range rs.GetTopics() {
		if name == "__consumer_offsets" || name == "__transaction_state" {
			t.Errorf("ListTopics lists the internal topic %s", name)
		}
	}

	rs, err = f.client.ListTopics(ctx, &kafkapixy.ListTopicRq{WithPartitions: true})
	if err != nil {
		t.Fatalf("ListTopics(with_partitions): %v", err)
	}
	if tm = rs.GetTopics()[topic]; tm == nil {
		t.Fatalf("ListTopics(with_partitions) lacks %s", topic)
	}
	checkConfig("ListTopics(with_partitions)", tm)
	checkPartitions("ListTopics(with_partitions)", tm.GetPartitions())

	tm, err = f.client.GetTopicMetadata(ctx, &kafkapixy.GetTopicMetadataRq{Topic: topic})
	if err != nil {
		t.Fatalf("GetTopicMetadata: %v", err)
	}
	checkConfig("GetTopicMetadata", tm)
	if len(tm.GetPartitions()) != 0 {
		t.Errorf("GetTopicMetadata without with_partitions listed partitions")
	}
	tm, err = f.client.GetTopicMetadata(ctx, &kafkapixy.GetTopicMetadataRq{Topic: topic, WithPartitions: true})
	if err != nil {
		t.Fatalf("GetTopicMetadata(with_partitions): %v", err)
	}
	checkConfig("GetTopicMetadata(with_partitions)", tm)
	checkPartitions("GetTopicMetadata(with_partitions)", tm.GetPartitions())

	_, err = f.client.GetTopicMetadata(ctx, &kafkapixy.GetTopicMetadataRq{Topic: testkit.Name(t, "missing")})
	wantCode(t, "GetTopicMetadata(unknown topic)", err, codes.NotFound, "")
}

// TestListConsumers checks that a group consuming through Ferry shows its
// member with every partition.
func TestListConsumers(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	produceTo(t, topic, 2, "x")
	f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true})

	ctx := testkit.Context(t, 30*time.Second)
	var rs *kafkapixy.ListConsumersRs
	for {
		var err error
		rs, err = f.client.ListConsumers(ctx, &kafkapixy.ListConsumersRq{Topic: topic})
		if err != nil {
			t.Fatalf("ListConsumers: %v", err)
		}
		if cg := rs.GetGroups()[group]; cg != nil && len(cg.GetConsumers()) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ListConsumers never showed one member of %s: %v", group, rs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for member, cp := range rs.GetGroups()[group].GetConsumers() {
		ps := slices.Clone(cp.GetPartitions())
		slices.Sort(ps)
		if member == "" || !slices.Equal(ps, []int32{0, 1, 2}) {
			t.Errorf("member %q has partitions %v, want 0, 1, 2", member, ps)
		}
	}
	if len(rs.GetGroups()) != 1 {
		t.Errorf("groups %v, want only %s", rs.GetGroups(), group)
	}

	one, err := f.client.ListConsumers(ctx, &kafkapixy.ListConsumersRq{Topic: topic, Group: group})
	if err != nil {
		t.Fatalf("ListConsumers(group): %v", err)
	}
	if len(one.GetGroups()) != 1 || one.GetGroups()[group] == nil {
		t.Errorf("ListConsumers(group) = %v, want %s only", one, group)
	}
	other, err := f.client.ListConsumers(ctx, &kafkapixy.ListConsumersRq{Topic: topic, Group: testkit.Name(t, "other")})
	if err != nil {
		t.Fatalf("ListConsumers(other group): %v", err)
	}
	if len(other.GetGroups()) != 0 {
		t.Errorf("ListConsumers(other group) = %v, want no groups", other)
	}
}

// TestRequestErrors checks every RPC's answer to an unknown cluster and to
// missing fields, and ConsumeNAck's to an unknown topic.
func TestRequestErrors(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	ctx := testkit.Context(t, 60*time.Second)
	c := f.client
	const bad = "no-such-cluster"

	calls := []struct {
		name string
		call func(cluster, topic, group string) error
		// needs lists the fields the RPC requires.
		needs []string
	}{
		{"Produce", func(cl, tp, _ string) error {
			_, err := c.Produce(ctx, &kafkapixy.ProdRq{Cluster: cl, Topic: tp, Message: []byte("x")})
			return err
		}, []string{"topic"}},
		{"ConsumeNAck", func(cl, tp, g string) error {
			_, err := c.ConsumeNAck(ctx, &kafkapixy.ConsNAckRq{Cluster: cl, Topic: tp, Group: g, NoAck: true})
			return err
		}, []string{"topic", "group"}},
		{"Ack", func(cl, tp, g string) error {
			_, err := c.Ack(ctx, &kafkapixy.AckRq{Cluster: cl, Topic: tp, Group: g})
			return err
		}, []string{"topic", "group"}},
		{"GetOffsets", func(cl, tp, g string) error {
			_, err := c.GetOffsets(ctx, &kafkapixy.GetOffsetsRq{Cluster: cl, Topic: tp, Group: g})
			return err
		}, []string{"topic", "group"}},
		{"SetOffsets", func(cl, tp, g string) error {
			_, err := c.SetOffsets(ctx, &kafkapixy.SetOffsetsRq{Cluster: cl, Topic: tp, Group: g,
				Offsets: []*kafkapixy.PartitionOffset{{Partition: 0, Offset: 0}}})
			return err
		}, []string{"topic", "group"}},
		{"ListTopics", func(cl, _, _ string) error {
			_, err := c.ListTopics(ctx, &kafkapixy.ListTopicRq{Cluster: cl})
			return err
		}, nil},
		{"ListConsumers", func(cl, tp, g string) error {
			_, err := c.ListConsumers(ctx, &kafkapixy.ListConsumersRq{Cluster: cl, Topic: tp, Group: g})
			return err
		}, []string{"topic"}},
		{"GetTopicMetadata", func(cl, tp, _ string) error {
			_, err := c.GetTopicMetadata(ctx, &kafkapixy.GetTopicMetadataRq{Cluster: cl, Topic: tp})
			return err
		}, []string{"topic"}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, "unknown cluster", tc.call(bad, topic, "g"), codes.InvalidArgument, bad)
			for _, field := range tc.needs {
				tp, g := topic, "g"
				if field == "topic" {
					tp = ""
				} else {
					g = ""
				}
				wantCode(t, "missing "+field, tc.call("", tp, g), codes.InvalidArgument, field)
			}
		})
	}

	_, err := c.ConsumeNAck(ctx, &kafkapixy.ConsNAckRq{Topic: testkit.Name(t, "missing"), Group: "g", NoAck: true})
	if isLongPollTimeout(err) {
		t.Errorf("ConsumeNAck(unknown topic) = %v, want NOT_FOUND for the topic, not the long-poll timeout", err)
	}
	wantCode(t, "ConsumeNAck(unknown topic)", err, codes.NotFound, "")
	// Unknown topics are NOT_FOUND wherever a topic is read (REST: 404).
	missing := testkit.Name(t, "missing")
	_, err = c.GetOffsets(ctx, &kafkapixy.GetOffsetsRq{Topic: missing, Group: "g"})
	wantCode(t, "GetOffsets(unknown topic)", err, codes.NotFound, "")
	_, err = c.SetOffsets(ctx, &kafkapixy.SetOffsetsRq{Topic: missing, Group: "g", Offsets: []*kafkapixy.PartitionOffset{{Partition: 0, Offset: 0}}})
	wantCode(t, "SetOffsets(unknown topic)", err, codes.NotFound, "")
	// The Ack fields of ConsumeNAck are checked, too.
	_, err = c.ConsumeNAck(ctx, &kafkapixy.ConsNAckRq{Topic: topic, Group: "g", AckPartition: -1, AckOffset: 3})
	wantCode(t, "negative ack_partition", err, codes.InvalidArgument, "ack_partition")
}

// TestTooManyWaiting checks that polls beyond max_waiting_polls are
// RESOURCE_EXHAUSTED while the others wait out their long poll.
func TestTooManyWaiting(t *testing.T) {
	f := newFixture(t, func(c *config.KafkaAPI) { c.Consume.MaxWaitingPolls = 1 })
	topic := newTopic(t, nil)
	group := testkit.Name(t, "group")
	// Join the group and wait for the assignment first.
	produceTo(t, topic, 0, "x")
	f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: group, AutoAck: true})

	const polls = 4
	errs := make([]error, polls)
	var wg sync.WaitGroup
	for i := range polls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.client.ConsumeNAck(testkit.Context(t, 10*time.Second), &kafkapixy.ConsNAckRq{Topic: topic, Group: group, NoAck: true})
		}()
	}
	wg.Wait()
	var exhausted, timedOut int
	for _, err := range errs {
		switch {
		case status.Code(err) == codes.ResourceExhausted:
			exhausted++
		case isLongPollTimeout(err):
			timedOut++
		default:
			t.Errorf("a poll ended with %v", err)
		}
	}
	if exhausted == 0 || timedOut == 0 {
		t.Errorf("%d polls exhausted, %d timed out; want some of each with max_waiting_polls 1", exhausted, timedOut)
	}
}

// TestClientDeadline checks that a client's deadline shorter than the long
// poll ends the poll with the client's own error, not Kafka-Pixy's timeout.
func TestClientDeadline(t *testing.T) {
	f := newFixture(t, func(c *config.KafkaAPI) { c.Consume.LongPollTimeout = 10 * time.Second })
	topic := newTopic(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.client.ConsumeNAck(ctx, &kafkapixy.ConsNAckRq{Topic: topic, Group: testkit.Name(t, "group"), NoAck: true})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("ConsumeNAck with a 300ms deadline = %v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the poll took %v past a 300ms deadline", d)
	}
}

// TestProduceLargeMessage checks that a message near Kafka-Pixy's 1 MiB
// request bound goes through whole.
func TestProduceLargeMessage(t *testing.T) {
	f := newFixture(t)
	topic := newTopic(t, nil)
	ctx := testkit.Context(t, 30*time.Second)
	big := bytes.Repeat([]byte("x"), 900<<10)
	rs, err := f.client.Produce(ctx, &kafkapixy.ProdRq{Topic: topic, KeyValue: []byte("big"), Message: big})
	if err != nil {
		t.Fatalf("producing 900 KiB: %v", err)
	}
	got := f.consume(t, &kafkapixy.ConsNAckRq{Topic: topic, Group: testkit.Name(t, "group"), AutoAck: true})
	if got.GetOffset() != rs.GetOffset() || !bytes.Equal(got.GetMessage(), big) {
		t.Errorf("consumed %d bytes at %d, want %d at %d", len(got.GetMessage()), got.GetOffset(), len(big), rs.GetOffset())
	}
}

// TestProduceCode checks that Produce answers an unknown topic with
// Kafka-Pixy's INVALID_ARGUMENT (the REST face keeps 404) and passes other
// codes on.
func TestProduceCode(t *testing.T) {
	err := produceCode(status.Error(codes.NotFound, `topic "t" not found`))
	wantCode(t, "unknown topic", err, codes.InvalidArgument, `topic "t" not found`)
	if got := status.Code(produceCode(status.Error(codes.Unavailable, "x"))); got != codes.Unavailable {
		t.Errorf("UNAVAILABLE became %v", got)
	}
	if produceCode(nil) != nil {
		t.Error("nil became an error")
	}
	if httpStatus(status.Error(codes.NotFound, "t")) != http.StatusNotFound {
		t.Error("the REST face must keep 404 for an unknown topic")
	}
}
