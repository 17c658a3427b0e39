package ferryapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// pollAll polls until n messages came, failing the test after 30s.
func (e *env) pollAll(ctx context.Context, req *kafkav1.PollRequest, n int) []*kafkav1.Message {
	e.t.Helper()
	var got []*kafkav1.Message
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		resp, err := e.client.Poll(ctx, req)
		if err != nil {
			e.t.Fatalf("Poll: %v", err)
		}
		got = append(got, resp.GetMessages()...)
	}
	if len(got) != n {
		e.t.Fatalf("polled %d messages, want %d", len(got), n)
	}
	return got
}

func TestProduceRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	// Within the producer's delivery timeout: see TestProduceOldTimestamp.
	ts := time.Now().Add(-5 * time.Second).Truncate(time.Millisecond).UTC()
	jsonValue, err := structpb.NewValue(map[string]any{"b": []any{true, nil, "x"}, "a": 1.5})
	if err != nil {
		t.Fatal(err)
	}
	p2 := int32(2)
	p1 := int32(1)
	reqs := []*kafkav1.ProduceRequest{
		{Topic: topic, Key: []byte("k1"), ValueText: proto.String("hello"),
			Headers: []*kafkav1.Header{{Key: "h1", Value: []byte("v1")}, {Key: "h2", Value: []byte{0, 1}}}, Timestamp: timestamppb.New(ts)},
		{Topic: topic, Key: []byte("k1"), ValueText: proto.String("hello again")},
		{Topic: topic, Partition: &p2, ValueJson: jsonValue},
		{Topic: topic, Key: []byte{}, ValueBytes: []byte{0xff, 0xfe}},
		{Topic: topic, Partition: &p1}, // no key, null value
	}
	resps := make([]*kafkav1.ProduceResponse, len(reqs))
	for i, req := range reqs {
		if resps[i], err = e.client.Produce(ctx, req); err != nil {
			t.Fatalf("producing record %d: %v", i, err)
		}
		if p := resps[i].GetPartition(); p < 0 || p > 2 || resps[i].GetOffset() < 0 {
			t.Fatalf("record %d went to %d-%d", i, p, resps[i].GetOffset())
		}
	}
	if !resps[0].GetTimestamp().AsTime().Equal(ts) {
		t.Errorf("record 0 has timestamp %v, want %v", resps[0].GetTimestamp().AsTime(), ts)
	}
	if resps[1].GetPartition() != resps[0].GetPartition() {
		t.Errorf("records with key k1 went to partitions %d and %d", resps[0].GetPartition(), resps[1].GetPartition())
	}
	if resps[2].GetPartition() != 2 || resps[4].GetPartition() != 1 {
		t.Errorf("records for partitions 2 and 1 went to %d and %d", resps[2].GetPartition(), resps[4].GetPartition())
	}

	// As text: valid UTF-8 comes as text, the rest as bytes.
	byRef := map[string]*kafkav1.Message{}
	for _, m := range e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 10, AutoAck: true,
		Timeout: durationpb.New(5 * time.Second), ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT}, len(reqs)) {
		byRef[key(m)] = m
	}
	get := func(i int) *kafkav1.Message {
		m := byRef[key(resps[i])]
		if m == nil {
			t.Fatalf("record %d (%s) was not polled", i, key(resps[i]))
		}
		if m.GetTopic() != topic || m.GetDeliveries() != 1 {
			t.Errorf("record %d: topic %q, deliveries %d", i, m.GetTopic(), m.GetDeliveries())
		}
		return m
	}
	m := get(0)
	if string(m.GetKey()) != "k1" || m.GetValueText() != "hello" || !m.GetTimestamp().AsTime().Equal(ts) {
		t.Errorf("record 0 came back as %v", m)
	}
	if len(m.GetHeaders()) != 2 || m.Headers[0].GetKey() != "h1" || string(m.Headers[0].GetValue()) != "v1" ||
		m.Headers[1].GetKey() != "h2" || !bytes.Equal(m.Headers[1].GetValue(), []byte{0, 1}) {
		t.Errorf("record 0 came back with headers %v", m.GetHeaders())
	}
	if m := get(2); m.GetValueText() != `{"a":1.5,"b":[true,null,"x"]}` {
		t.Errorf("the JSON record came back as text %q", m.GetValueText())
	}
	if m := get(3); m.Key == nil || len(m.Key) != 0 || !bytes.Equal(m.GetValueBytes(), []byte{0xff, 0xfe}) {
		t.Errorf("record with an empty key and binary value came back as key %#v, value %v %q %v", m.Key, m.ValueBytes, m.GetValueText(), m.GetValueJson())
	}
	if m := get(4); m.Key != nil || m.ValueBytes != nil || m.ValueText != nil || m.ValueJson != nil {
		t.Errorf("record without key and value came back with key %#v, value %v %q %v", m.Key, m.ValueBytes, m.GetValueText(), m.GetValueJson())
	}

	// As JSON, in another group: JSON values come as JSON, the rest as bytes.
	byRef = map[string]*kafkav1.Message{}
	for _, m := range e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group + "-json", MaxMessages: 10, AutoAck: true,
		Timeout: durationpb.New(5 * time.Second), ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_JSON}, len(reqs)) {
		byRef[key(m)] = m
	}
	if m := get(2); !proto.Equal(m.GetValueJson(), jsonValue) {
		t.Errorf("the JSON record came back as %v", m)
	}
	if m := get(0); string(m.GetValueBytes()) != "hello" {
		t.Errorf("a text record read as JSON came back as %v", m)
	}
}

// TestProduceOldTimestamp writes records whose timestamps lie further back
// than the producer's delivery timeout, as a replay or a migration does.
func TestProduceOldTimestamp(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic := kit.Topic(t, 3, nil)
	ts := time.UnixMilli(1_700_000_000_123).UTC()
	resp, err := e.client.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Timestamp: timestamppb.New(ts), ValueText: proto.String("old")})
	if err != nil {
		t.Fatalf("producing a record of %v: %v", ts, err)
	}
	if !resp.GetTimestamp().AsTime().Equal(ts) {
		t.Errorf("the record has timestamp %v, want %v", resp.GetTimestamp().AsTime(), ts)
	}
}

func TestProduceAsync(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	resp, err := e.client.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Async: true, ValueText: proto.String("async")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPartition() != -1 || resp.GetOffset() != -1 {
		t.Errorf("async produce answered %d-%d, want -1--1", resp.GetPartition(), resp.GetOffset())
	}
	msgs := e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, AutoAck: true, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT}, 1)
	if msgs[0].GetValueText() != "async" {
		t.Errorf("polled %v", msgs[0])
	}

	// A record that fails after the answer is logged.
	p := int32(99)
	resp, err = e.client.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Async: true, Partition: &p})
	if err != nil || resp.GetPartition() != -1 {
		t.Fatalf("async produce to partition 99: %v, %v", resp, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.logs.String(), "asynchronous produce failed") {
		if time.Now().After(deadline) {
			t.Fatal("the failed asynchronous produce was not logged")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Synchronously, the same record fails the call.
	_, err = e.client.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, Partition: &p})
	wantCode(t, err, codes.InvalidArgument, "partition 99")
}

func TestProduceStream(t *testing.T) {
	for _, inFlight := range []int{0, 3} {
		t.Run(fmt.Sprintf("in-flight-%d", inFlight), func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *config.KafkaAPI) { c.Produce.MaxInFlightPerStream = inFlight }))
			ctx := testCtx(t)
			topic := kit.Topic(t, 3, nil)
			stream, err := e.produceStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			const n = 500
			bad := map[int]string{50: "partition", 100: "topic", 150: "async", 151: "value_json", 152: "at most one of value_bytes"}
			go func() {
				p99 := int32(99)
				var batch []*kafkav1.ProduceRequest
				for i := range n {
					req := &kafkav1.ProduceRequest{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%7),
						ValueText: proto.String(fmt.Sprint(i))}
					switch bad[i] {
					case "partition":
						req.Partition = &p99
					case "topic":
						req.Topic = ""
					case "async":
						req.Async = true
					case "value_json":
						req.ValueText, req.ValueJson = nil, &structpb.Value{}
					case "at most one of value_bytes":
						req.ValueBytes = []byte("and bytes")
					}
					// Requests of 1 to 7 records: results keep the records'
					// order across requests.
					batch = append(batch, req)
					if len(batch) == i%7+1 || i == n-1 {
						if stream.sendBatch(batch...) != nil {
							return // the receiving side reports the failure
						}
						batch = nil
					}
				}
				_ = stream.CloseSend()
			}()
			last := map[int32]int64{}
			for i := range n {
				res, err := stream.recv()
				if err != nil {
					t.Fatalf("result %d: %v", i, err)
				}
				if res.GetSequence() != int64(i) {
					t.Fatalf("result %d has sequence %d", i, res.GetSequence())
				}
				if field, ok := bad[i]; ok {
					if codes.Code(res.GetCode()) != codes.InvalidArgument || !strings.Contains(res.GetError(), field) {
						t.Errorf("record %d: got code %d %q, want INVALID_ARGUMENT about %s", i, res.GetCode(), res.GetError(), field)
					}
					continue
				}
				if res.GetCode() != 0 || res.GetError() != "" {
					t.Fatalf("record %d failed: %d %s", i, res.GetCode(), res.GetError())
				}
				if prev, ok := last[res.GetPartition()]; ok && res.GetOffset() <= prev {
					t.Fatalf("record %d got offset %d on partition %d after %d: out of order", i, res.GetOffset(), res.GetPartition(), prev)
				}
				last[res.GetPartition()] = res.GetOffset()
			}
			if _, err := stream.recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after every result the stream ended with %v, want OK", err)
			}
			offs, err := e.client.GetOffsets(ctx, &kafkav1.GetOffsetsRequest{Topic: topic, Group: testkit.Name(t, "group")})
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, p := range offs.GetPartitions() {
				total += p.GetEnd()
			}
			if total != n-int64(len(bad)) {
				t.Errorf("the topic holds %d records, want %d", total, n-len(bad))
			}
		})
	}
}

func TestConsumeCredits(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 10)

	c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 3, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT})
	got := c.take(3, 20*time.Second)
	c.none(time.Second)
	c.send(&kafkav1.ConsumeRequest{Credits: 4})
	got = append(got, c.take(4, 10*time.Second)...)
	c.none(time.Second)

	// Acknowledge out of order, then take the rest.
	ack := &kafkav1.ConsumeRequest{Credits: 10}
	for i := len(got) - 1; i >= 0; i-- {
		ack.Acks = append(ack.Acks, ref(got[i]))
	}
	c.send(ack)
	rest := c.take(3, 10*time.Second)
	got = append(got, rest...)
	seen := map[string]bool{}
	for _, m := range got {
		if seen[key(m)] || !strings.HasPrefix(m.GetValueText(), "m-") || m.GetDeliveries() != 1 {
			t.Fatalf("unexpected delivery %v", m)
		}
		seen[key(m)] = true
	}
	c.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{ref(rest[2]), ref(rest[0]), ref(rest[1])}})
	e.waitCommitted(ctx, group, topic, 10)
	c.none(500 * time.Millisecond)

	// A half-close ends the stream with OK.
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := c.end(10 * time.Second); err != nil {
		t.Fatalf("after a half-close the stream ended with %v, want OK", err)
	}
}

func TestConsumeRedelivery(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 6)

	a := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 6})
	got := a.take(6, 20*time.Second)
	a.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{ref(got[5]), ref(got[0]), ref(got[3])}})
	unacked := map[string]bool{key(got[1]): true, key(got[2]): true, key(got[4]): true}
	// Let the acks land before the stream goes.
	e.waitCommittedAtLeast(ctx, group, topic, got, []int{0, 3, 5})
	a.kill()

	b := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 10})
	for _, m := range b.take(3, 20*time.Second) {
		if !unacked[key(m)] {
			t.Errorf("redelivered %s, which was acknowledged or already redelivered", key(m))
		}
		delete(unacked, key(m))
		if m.GetDeliveries() != 2 {
			t.Errorf("redelivered %s with deliveries %d, want 2", key(m), m.GetDeliveries())
		}
	}
	b.none(time.Second)
}

// waitCommittedAtLeast waits until the acknowledged messages got[idx] show
// as acknowledged in GetOffsets: committed past them or in sparse acks.
func (e *env) waitCommittedAtLeast(ctx context.Context, group, topic string, got []*kafkav1.Message, idx []int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := e.client.GetOffsets(ctx, &kafkav1.GetOffsetsRequest{Topic: topic, Group: group})
		if err != nil {
			e.t.Fatal(err)
		}
		all := true
		for _, i := range idx {
			m := got[i]
			for _, p := range resp.GetPartitions() {
				if p.GetPartition() == m.GetPartition() && p.GetCommitted() <= m.GetOffset() && !inRanges(p.GetSparseAcks(), m.GetOffset()) {
					all = false
				}
			}
		}
		if all {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatal("the acknowledgements were not committed")
}

// inRanges reports whether off is in "from-to" ranges (to exclusive).
func inRanges(ranges string, off int64) bool {
	for _, r := range strings.Split(ranges, ",") {
		var from, to int64
		if _, err := fmt.Sscanf(r, "%d-%d", &from, &to); err == nil && off >= from && off < to {
			return true
		}
	}
	return false
}

func TestConsumeNack(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 1)
	c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 5})
	m := c.next(20 * time.Second)
	c.send(&kafkav1.ConsumeRequest{Nacks: []*kafkav1.MessageRef{ref(m)}})
	again := c.next(10 * time.Second)
	if key(again) != key(m) || again.GetDeliveries() != 2 {
		t.Fatalf("after a nack got %s (deliveries %d), want %s again", key(again), again.GetDeliveries(), key(m))
	}
	c.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{ref(again)}})
	c.none(time.Second)
	e.waitCommitted(ctx, group, topic, 1)
}

func TestConsumeErrors(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")

	for _, tc := range []struct {
		name  string
		first *kafkav1.ConsumeRequest
		code  codes.Code
		msg   string
	}{
		{"no topic", &kafkav1.ConsumeRequest{Group: group, Credits: 1}, codes.InvalidArgument, "topic"},
		{"no group", &kafkav1.ConsumeRequest{Topic: topic, Credits: 1}, codes.InvalidArgument, "group"},
		{"negative credits", &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: -1}, codes.InvalidArgument, "credits"},
		{"unknown topic", &kafkav1.ConsumeRequest{Topic: topic + "-nope", Group: group, Credits: 1}, codes.NotFound, "does not exist"},
		{"unknown cluster", &kafkav1.ConsumeRequest{Cluster: "nope", Topic: topic, Group: group, Credits: 1}, codes.InvalidArgument, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.consume(ctx, tc.first)
			wantCode(t, c.end(20*time.Second), tc.code, tc.msg)
		})
	}

	e.produce(ctx, topic, -1, "m", 3)
	t.Run("mid-stream", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  *kafkav1.ConsumeRequest
			msg  string
		}{
			{"other topic", &kafkav1.ConsumeRequest{Topic: topic + "-other"}, "topic"},
			{"other group", &kafkav1.ConsumeRequest{Group: group + "-other"}, "group"},
			{"other cluster", &kafkav1.ConsumeRequest{Cluster: "other"}, "cluster"},
			{"negative credits", &kafkav1.ConsumeRequest{Credits: -2}, "credits"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group})
				c.send(tc.req)
				wantCode(t, c.end(20*time.Second), codes.InvalidArgument, tc.msg)
			})
		}
	})

	t.Run("acks", func(t *testing.T) {
		c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 1})
		m := c.next(20 * time.Second)
		// A partition this instance does not own is skipped: the stream
		// goes on, and the request's other acks take effect (m is the
		// first offset of its partition, so acknowledging it commits 1).
		c.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{{Partition: 99, Offset: 0}, ref(m)}, Credits: 1})
		c.next(10 * time.Second)
		e.waitCommitted(ctx, group, topic, 1)
		if !strings.Contains(e.logs.String(), "skipped") {
			t.Error("the ack of a partition not owned was not logged")
		}
		// An offset never delivered ends the stream.
		c.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{{Partition: m.GetPartition(), Offset: 1_000_000}}})
		wantCode(t, c.end(10*time.Second), codes.InvalidArgument, "1000000")
	})
}

func TestSubscribeGRPC(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 3)

	stream, err := e.client.Subscribe(ctx, &kafkav1.SubscribeRequest{Topic: topic, Group: group, AutoAck: true, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetContentType() != "application/x-ndjson" || len(first.GetData()) != 0 {
		t.Fatalf("the first chunk is %v, want an empty NDJSON one", first)
	}
	var data []byte
	for bytes.Count(data, []byte("\n")) < 3 {
		chunk, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, chunk.GetData()...)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.Contains(line, `"valueText":"m-`) {
			t.Errorf("line %s has no text value", line)
		}
	}
	e.waitCommitted(ctx, group, topic, 3)

	for _, tc := range []struct {
		req *kafkav1.SubscribeRequest
		msg string
	}{
		{&kafkav1.SubscribeRequest{Topic: topic, Group: group, Format: "xml"}, "format"},
		{&kafkav1.SubscribeRequest{Topic: topic, Group: group, MaxUnacked: -1}, "max_unacked"},
		{&kafkav1.SubscribeRequest{Topic: topic}, "group"},
	} {
		s, err := e.client.Subscribe(ctx, tc.req)
		if err == nil {
			_, err = s.Recv()
		}
		wantCode(t, err, codes.InvalidArgument, tc.msg)
	}
}

// TestConcurrentStreams runs producers and consumers of one group side by
// side, for the race detector and for ordering under load.
func TestConcurrentStreams(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	const producers, perProducer = 4, 250
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := e.produceStream(ctx)
			if err != nil {
				errs <- err
				return
			}
			go func() {
				for i := range perProducer {
					if stream.send(&kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String(fmt.Sprintf("%d-%d", p, i))}) != nil {
						return
					}
				}
				_ = stream.CloseSend()
			}()
			for i := range perProducer {
				res, err := stream.recv()
				if err != nil || res.GetSequence() != int64(i) || res.GetCode() != 0 {
					errs <- fmt.Errorf("producer %d result %d: %v %v", p, i, res, err)
					return
				}
			}
		}()
	}
	c := e.consume(ctx, &kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: producers * perProducer})
	seen := map[string]bool{}
	for range producers * perProducer {
		m := c.next(30 * time.Second)
		if seen[key(m)] {
			t.Fatalf("%s delivered twice", key(m))
		}
		seen[key(m)] = true
		c.send(&kafkav1.ConsumeRequest{Acks: []*kafkav1.MessageRef{ref(m)}})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.waitCommitted(ctx, group, topic, producers*perProducer)
}

func TestPlainGRPCServer(t *testing.T) {
	e := newEnv(t, withPlainServer())
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	e.produce(ctx, topic, -1, "m", 1)
	e.restDo(http.MethodPost, "/v1/clusters/default/topics/"+topic+"/records", `{"valueText":"over REST"}`, 200, nil)
	got := e.pollAll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 2, AutoAck: true, ValueFormat: kafkav1.ValueFormat_VALUE_FORMAT_TEXT, Timeout: durationpb.New(5 * time.Second)}, 2)
	texts := []string{got[0].GetValueText(), got[1].GetValueText()}
	slices.Sort(texts)
	if !slices.Equal(texts, []string{"m-0", "over REST"}) {
		t.Errorf("polled %q", texts)
	}
}

// TestConsumeResponseSize checks that a Consume response carries several
// messages but stays within the 32 KiB grpc-go buffer class, and that a
// message larger than that comes alone.
func TestConsumeResponseSize(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	topic, group := kit.Topic(t, 3, nil), testkit.Name(t, "group")
	const n = 200
	value := bytes.Repeat([]byte("v"), 1000)
	records := make([]*kafkav1.ProduceRequest, n)
	for i := range records {
		records[i] = &kafkav1.ProduceRequest{Topic: topic, Key: fmt.Appendf(nil, "key-%d", i),
			Headers:    []*kafkav1.Header{{Key: "h", Value: []byte("header value")}},
			ValueBytes: value}
	}
	big := &kafkav1.ProduceRequest{Topic: topic, ValueBytes: bytes.Repeat([]byte("b"), 40<<10)}
	ps, err := e.produceStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.sendBatch(append(records, big)...); err != nil {
		t.Fatal(err)
	}
	for range n + 1 {
		if _, err := ps.recv(); err != nil {
			t.Fatal(err)
		}
	}

	stream, err := e.client.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&kafkav1.ConsumeRequest{Topic: topic, Group: group, Credits: 1000}); err != nil {
		t.Fatal(err)
	}
	got, most := 0, 0
	for got < n+1 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		msgs := resp.GetMessages()
		got += len(msgs)
		most = max(most, len(msgs))
		size := proto.Size(resp)
		for _, m := range msgs {
			if len(m.GetValueBytes()) == len(big.GetValueBytes()) && len(msgs) != 1 {
				t.Errorf("the %d-byte message came with %d others", size, len(msgs)-1)
			}
		}
		if size > 32<<10 && len(msgs) > 1 {
			t.Errorf("a response of %d messages is %d bytes, above 32 KiB", len(msgs), size)
		}
	}
	if most < 20 {
		t.Errorf("at most %d messages per response, want about 30 of ~1 KiB", most)
	}
}
