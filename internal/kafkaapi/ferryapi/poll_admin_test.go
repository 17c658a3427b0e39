package ferryapi

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

func TestPoll(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.KafkaAPI) { c.Consume.AckTimeout = 2 * time.Second }))
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")

	// Join the group first: the first poll may spend its time joining.
	if _, err := e.client.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, Timeout: durationpb.New(3 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		timeout *durationpb.Duration
		want    time.Duration
	}{
		{"given timeout", durationpb.New(200 * time.Millisecond), 200 * time.Millisecond},
		{"default timeout", nil, e.cfg.Consume.LongPollTimeout},
		{"no wait", durationpb.New(0), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := e.client.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, Timeout: tc.timeout})
			took := time.Since(start)
			if err != nil || len(resp.GetMessages()) != 0 {
				t.Fatalf("poll of an empty topic: %v, %v", resp, err)
			}
			if took < tc.want || took > tc.want+2*time.Second {
				t.Errorf("the poll took %v, want about %v", took, tc.want)
			}
		})
	}

	e.produce(ctx, topic, -1, "m", 5)
	got := e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 2, Timeout: durationpb.New(5 * time.Second)}, 5)
	// Unacknowledged, the messages come again after the ack timeout.
	again := e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 10, Timeout: durationpb.New(5 * time.Second)}, 5)
	for _, m := range again {
		if m.GetDeliveries() != 2 {
			t.Errorf("%s redelivered with deliveries %d, want 2", key(m), m.GetDeliveries())
		}
	}
	// Acknowledged in a poll's acks, they are committed and not delivered again.
	var acks []*kafkav1.MessageRef
	for _, m := range got {
		acks = append(acks, ref(m))
	}
	resp, err := e.client.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, Acks: acks, Timeout: durationpb.New(3 * time.Second)})
	if err != nil || len(resp.GetMessages()) != 0 {
		t.Fatalf("poll with acks: %v, %v", resp, err)
	}
	e.waitCommitted(ctx, group, topic, 5)

	// auto_ack: nothing comes again after the ack timeout.
	e.produce(ctx, topic, -1, "n", 3)
	e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 3, AutoAck: true, Timeout: durationpb.New(5 * time.Second)}, 3)
	resp, err = e.client.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, Timeout: durationpb.New(3 * time.Second)})
	if err != nil || len(resp.GetMessages()) != 0 {
		t.Fatalf("after auto_ack a poll got %v, %v", resp, err)
	}
	e.waitCommitted(ctx, group, topic, 8)

	for _, tc := range []struct {
		name string
		req  *kafkav1.PollRequest
		code codes.Code
		msg  string
	}{
		{"no topic", &kafkav1.PollRequest{Group: group}, codes.InvalidArgument, "topic"},
		{"no group", &kafkav1.PollRequest{Topic: topic}, codes.InvalidArgument, "group"},
		{"too many", &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 1001}, codes.InvalidArgument, "max_messages"},
		{"negative max", &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: -1}, codes.InvalidArgument, "max_messages"},
		{"negative timeout", &kafkav1.PollRequest{Topic: topic, Group: group, Timeout: durationpb.New(-time.Second)}, codes.InvalidArgument, "timeout"},
		{"ack never delivered", &kafkav1.PollRequest{Topic: topic, Group: group, Acks: []*kafkav1.MessageRef{{Partition: got[0].GetPartition(), Offset: 999}}}, codes.InvalidArgument, "999"},
		{"unknown topic", &kafkav1.PollRequest{Topic: topic + "-nope", Group: group}, codes.NotFound, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.Poll(ctx, tc.req)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

func TestAck(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 4)
	got := e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 4, Timeout: durationpb.New(5 * time.Second)}, 4)
	var acks []*kafkav1.MessageRef
	for _, m := range slices.Backward(got) {
		acks = append(acks, ref(m))
	}
	if _, err := e.client.Ack(ctx, &kafkav1.AckRequest{Topic: topic, Group: group, Acks: acks}); err != nil {
		t.Fatal(err)
	}
	e.waitCommitted(ctx, group, topic, 4)

	_, err := e.client.Ack(ctx, &kafkav1.AckRequest{Topic: topic, Group: group + "-none", Acks: acks})
	wantCode(t, err, codes.FailedPrecondition, "not consuming")
	_, err = e.client.Ack(ctx, &kafkav1.AckRequest{Topic: topic, Acks: acks})
	wantCode(t, err, codes.InvalidArgument, "group")
}

func TestSetOffsetsOnLiveStream(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	// Within the producer's delivery timeout: see TestProduceOldTimestamp.
	base := time.Now().Add(-15 * time.Second).Truncate(time.Second)
	p0 := int32(0)
	for i := range 10 {
		_, err := e.client.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Partition: &p0,
			Timestamp: timestamppb.New(base.Add(time.Duration(i) * time.Second)), ValueText: proto.String(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
	}
	c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 1000})
	// takeOffsets takes n messages, acknowledges them, waits for the
	// acknowledgements to be committed (an ack still in flight when the
	// offsets move would be for an offset not delivered any more) and
	// returns their offsets in order.
	takeOffsets := func(n int) []int64 {
		t.Helper()
		msgs := c.take(n, 20*time.Second)
		req := &kafkav1.ConsumeRequest{}
		var offs []int64
		for _, m := range msgs {
			if m.GetPartition() != 0 {
				t.Fatalf("got a message of partition %d", m.GetPartition())
			}
			req.Acks = append(req.Acks, ref(m))
			offs = append(offs, m.GetOffset())
		}
		c.send(req)
		e.waitCommitted(ctx, group, topic, offs[len(offs)-1]+1)
		return offs
	}
	seq := func(from, to int64) []int64 {
		var s []int64
		for i := from; i < to; i++ {
			s = append(s, i)
		}
		return s
	}
	if got := takeOffsets(10); !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("first read got offsets %v", got)
	}

	set := func(req *kafkav1.SetOffsetsRequest) *kafkav1.SetOffsetsResponse {
		t.Helper()
		req.Topic, req.Group = topic, group
		resp, err := e.client.SetOffsets(ctx, req)
		if err != nil {
			t.Fatalf("SetOffsets %v: %v", req.GetTarget(), err)
		}
		return resp
	}
	partition0 := func(resp *kafkav1.SetOffsetsResponse) int64 {
		for _, p := range resp.GetPartitions() {
			if p.GetPartition() == 0 {
				return p.GetOffset()
			}
		}
		t.Fatalf("SetOffsets answered %v, without partition 0", resp)
		return 0
	}

	resp := set(&kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Position{Position: "earliest"}})
	if partition0(resp) != 0 {
		t.Errorf("earliest set partition 0 to %d", partition0(resp))
	}
	if got := takeOffsets(10); !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("after earliest got offsets %v", got)
	}

	resp = set(&kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Offsets{Offsets: &kafkav1.PartitionTargets{
		Partitions: []*kafkav1.PartitionTarget{{Partition: 0, Offset: 7}}}}})
	if partition0(resp) != 7 {
		t.Errorf("offsets set partition 0 to %d", partition0(resp))
	}
	if got := takeOffsets(3); !slices.Equal(got, seq(7, 10)) {
		t.Fatalf("after offset 7 got offsets %v", got)
	}

	resp = set(&kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Timestamp{Timestamp: timestamppb.New(base.Add(5 * time.Second))}})
	if partition0(resp) != 5 {
		t.Errorf("timestamp set partition 0 to %d", partition0(resp))
	}
	if got := takeOffsets(5); !slices.Equal(got, seq(5, 10)) {
		t.Fatalf("after the timestamp got offsets %v", got)
	}

	resp = set(&kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Position{Position: "latest"}})
	if partition0(resp) != 10 {
		t.Errorf("latest set partition 0 to %d", partition0(resp))
	}
	c.none(time.Second)
	e.produce(ctx, topic, 0, "new", 1)
	if got := takeOffsets(1); !slices.Equal(got, []int64{10}) {
		t.Fatalf("after latest got offsets %v", got)
	}

	for _, tc := range []struct {
		name string
		req  *kafkav1.SetOffsetsRequest
		msg  string
	}{
		{"no target", &kafkav1.SetOffsetsRequest{}, "target"},
		{"bad position", &kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Position{Position: "middle"}}, "position"},
		{"no partitions", &kafkav1.SetOffsetsRequest{Target: &kafkav1.SetOffsetsRequest_Offsets{Offsets: &kafkav1.PartitionTargets{}}}, "offsets.partitions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Topic, tc.req.Group = topic, group
			_, err := e.client.SetOffsets(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
}

func TestAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")

	clusters, err := e.client.ListClusters(ctx, &kafkav1.ListClustersRequest{})
	if err != nil || !slices.Equal(clusters.GetClusters(), []string{"default"}) {
		t.Fatalf("ListClusters: %v, %v", clusters, err)
	}
	topics, err := e.client.ListTopics(ctx, &kafkav1.ListTopicsRequest{})
	if err != nil || !slices.Contains(topics.GetTopics(), topic) {
		t.Fatalf("ListTopics does not list %s: %v, %v", topic, topics, err)
	}
	desc, err := e.client.DescribeTopic(ctx, &kafkav1.DescribeTopicRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if desc.GetTopic() != topic || len(desc.GetPartitions()) != 3 || len(desc.GetConfigs()) == 0 {
		t.Fatalf("DescribeTopic: %v", desc)
	}
	for i, p := range desc.GetPartitions() {
		if p.GetPartition() != int32(i) || p.GetLeader() < 0 || len(p.GetReplicas()) == 0 || len(p.GetIsr()) == 0 {
			t.Errorf("partition %d described as %v", i, p)
		}
	}
	_, err = e.client.DescribeTopic(ctx, &kafkav1.DescribeTopicRequest{Topic: topic + "-nope"})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.DescribeTopic(ctx, &kafkav1.DescribeTopicRequest{})
	wantCode(t, err, codes.InvalidArgument, "topic")
	_, err = e.client.ListTopics(ctx, &kafkav1.ListTopicsRequest{Cluster: "nope"})
	wantCode(t, err, codes.InvalidArgument, "nope")

	e.produce(ctx, topic, -1, "m", 1)
	c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 1})
	c.next(20 * time.Second)
	groups, err := e.client.ListGroups(ctx, &kafkav1.ListGroupsRequest{})
	if err != nil || !slices.Contains(groups.GetGroups(), group) {
		t.Fatalf("ListGroups does not list %s: %v, %v", group, groups, err)
	}
	var gd *kafkav1.GroupDescription
	deadline := time.Now().Add(20 * time.Second)
	for {
		if gd, err = e.client.DescribeGroup(ctx, &kafkav1.DescribeGroupRequest{Group: group}); err != nil {
			t.Fatal(err)
		}
		if gd.GetState() == "Stable" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gd.GetGroup() != group || gd.GetState() != "Stable" || len(gd.GetMembers()) != 1 {
		t.Fatalf("DescribeGroup: %v", gd)
	}
	if parts := gd.Members[0].GetAssignments()[topic].GetPartitions(); !slices.Equal(parts, []int32{0, 1, 2}) {
		t.Errorf("the member is assigned %v of %s, want all three", parts, topic)
	}
	_, err = e.client.DescribeGroup(ctx, &kafkav1.DescribeGroupRequest{Group: group + "-nope"})
	wantCode(t, err, codes.NotFound)
	_, err = e.client.DescribeGroup(ctx, &kafkav1.DescribeGroupRequest{})
	wantCode(t, err, codes.InvalidArgument, "group")
}
