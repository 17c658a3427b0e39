package interop_test

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/fetch"
)

const fanoutMethod = "/example.FanoutService/FanoutServerStream"

// record is one record of a fetched topic, as produced.
type record struct {
	msg       string
	partition int32
	offset    int64
}

// fetched is one response message of a fetch route.
type fetched struct {
	msg string
	id  []byte
}

type subscription struct {
	s      grpc.ClientStream
	cancel context.CancelFunc
}

// subscribe calls FanoutServerStream with md; x-topic in md picks the
// topic on both Ferry and Zilla.
func subscribe(t *testing.T, cc *grpc.ClientConn, md metadata.MD) *subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s, err := cc.NewStream(metadata.NewOutgoingContext(ctx, md), &grpc.StreamDesc{ServerStreams: true}, fanoutMethod)
	if err == nil {
		empty := []byte{}
		if err = s.SendMsg(&empty); err == nil {
			err = s.CloseSend()
		}
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &subscription{s: s, cancel: cancel}
}

// take reads n messages.
func (s *subscription) take(t *testing.T, n int) []fetched {
	t.Helper()
	out := make([]fetched, 0, n)
	for len(out) < n {
		var b []byte
		if err := s.s.RecvMsg(&b); err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		id, ok := fetch.IDFromMessage(b, 32767)
		if !ok {
			t.Fatalf("message %x carries no message id in field 32767", b)
		}
		out = append(out, fetched{msg: unecho(b), id: id})
	}
	return out
}

// position is a decoded message id: partition → next offset.
type position map[int32]int64

// parseID decodes a version 1 message id.
func parseID(id []byte) (position, error) {
	if len(id) == 0 || id[0] != 1 {
		return nil, fmt.Errorf("id %x: not version 1", id)
	}
	b := id[1:]
	zz := func() (int64, error) {
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, fmt.Errorf("id %x: bad varint", id)
		}
		b = b[n:]
		return protowire.DecodeZigZag(v), nil
	}
	count, err := zz()
	if err != nil {
		return nil, err
	}
	p := position{}
	for i := int64(0); i < count; i++ {
		part, err := zz()
		if err != nil {
			return nil, err
		}
		off, err := zz()
		if err != nil {
			return nil, err
		}
		p[int32(part)] = off
	}
	return p, nil
}

// encodeID encodes p as a version 1 message id, partitions in order.
func encodeID(p position) []byte {
	parts := make([]int32, 0, len(p))
	for part := range p {
		parts = append(parts, part)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	b := protowire.AppendVarint([]byte{1}, protowire.EncodeZigZag(int64(len(parts))))
	for _, part := range parts {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(part)))
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(p[part]))
	}
	return b
}

// positions returns the position after each message of got in its own
// stream. Both Ferry and Zilla list every partition of the topic from the
// first message on; a partition that delivered nothing yet stands at
// unseen.
func positions(got []fetched, recs map[string]record, partitions int32, unseen int64) []position {
	p := position{}
	for i := int32(0); i < partitions; i++ {
		p[i] = unseen
	}
	var out []position
	for _, f := range got {
		r := recs[f.msg]
		p[r.partition] = r.offset + 1
		c := position{}
		for k, v := range p {
			c[k] = v
		}
		out = append(out, c)
	}
	return out
}

// resumeFrom returns the records of recs (in produced order) that a
// subscriber resuming at p must get: on a listed partition those at or
// after its offset (all of them at earliest), on others all.
func resumeFrom(recs []record, p position) []record {
	var out []record
	for _, r := range recs {
		if next, ok := p[r.partition]; !ok || next < 0 || r.offset >= next {
			out = append(out, r)
		}
	}
	return out
}

// checkStream fails t unless got holds exactly want's messages, each
// once, in offset order within each partition.
func checkStream(t *testing.T, side string, got []fetched, want []record, recs map[string]record) {
	t.Helper()
	seen := map[string]int{}
	last := map[int32]int64{}
	for _, f := range got {
		seen[f.msg]++
		r, ok := recs[f.msg]
		if !ok {
			t.Errorf("%s delivered %q, which was never produced", side, f.msg)
			continue
		}
		if o, ok := last[r.partition]; ok && r.offset <= o {
			t.Errorf("%s delivered %q (partition %d offset %d) after offset %d", side, f.msg, r.partition, r.offset, o)
		}
		last[r.partition] = r.offset
	}
	for _, r := range want {
		if seen[r.msg] != 1 {
			t.Errorf("%s delivered %q %d times, want once", side, r.msg, seen[r.msg])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s delivered %d messages, want %d", side, len(got), len(want))
	}
}

// TestFetch: one topic (1 and 3 partitions) streamed by Ferry and Zilla
// while records are produced; the message ids of both, and a subscriber
// resuming on one with the other's id.
func TestFetch(t *testing.T) {
	s := need(t)
	for _, tc := range []struct {
		name, sel, topic string
		partitions       int32
	}{
		{"OnePartition", "one", s.topics.f1, 1},
		{"ThreePartitions", "three", s.topics.f3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testFetch(t, s, tc.sel, tc.topic, tc.partitions)
		})
	}
}

func testFetch(t *testing.T, s *suite, sel, topic string, partitions int32) {
	prod, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	recs := map[string]record{}
	var order []record
	produce := func(msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			r := &kgo.Record{Topic: topic, Partition: int32(len(order)) % partitions, Value: echo(m)}
			if err := prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			rec := record{msg: m, partition: r.Partition, offset: r.Offset}
			recs[m] = rec
			order = append(order, rec)
		}
	}
	md := func(kv ...string) metadata.MD { return metadata.Pairs(append([]string{"x-topic", sel}, kv...)...) }

	zsub, fsub := subscribe(t, s.zillaCC, md()), subscribe(t, s.ferryCC, md())
	time.Sleep(500 * time.Millisecond) // both subscribed before the first record
	var first []string
	for i := 0; i < 9; i++ {
		first = append(first, fmt.Sprintf("%s-m%d", sel, i))
	}
	produce(first...)
	zgot, fgot := zsub.take(t, len(first)), fsub.take(t, len(first))
	zsub.cancel()
	fsub.cancel()
	checkStream(t, "Zilla", zgot, order, recs)
	checkStream(t, "Ferry", fgot, order, recs)
	// Ferry's ids: every partition in ascending order, those that
	// delivered nothing yet at the offset Ferry starts them from (the log
	// start, 0 on this new topic).
	for i, want := range positions(fgot, recs, partitions, 0) {
		if !bytes.Equal(fgot[i].id, encodeID(want)) {
			t.Errorf("Ferry: message %d (%q) id = %x, want %x", i, fgot[i].msg, fgot[i].id, encodeID(want))
		}
	}
	// Zilla's ids: the same positions, but a partition that delivered
	// nothing yet stands at a negative offset (-1 when the subscriber came
	// before the partition held records, -2 otherwise), and the partitions
	// come in Zilla's own order.
	for i, want := range positions(zgot, recs, partitions, 0) {
		got, err := parseID(zgot[i].id)
		if err != nil {
			t.Fatalf("Zilla: message %d: %v", i, err)
		}
		for part, next := range got {
			if next < 0 && want[part] == 0 {
				got[part] = 0
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Zilla: message %d (%q) id = %x, position %v, want %v (negative where nothing was delivered)", i, zgot[i].msg, zgot[i].id, got, want)
		}
	}
	// Where both streams stand at the same position with every partition
	// delivered, the ids hold the same entries; the bytes are the same
	// when Zilla happens to list the partitions in ascending order, as
	// always on one partition.
	same := 0
	for i := range zgot {
		zp, _ := parseID(zgot[i].id)
		fp, _ := parseID(fgot[i].id)
		if fmt.Sprint(zp) == fmt.Sprint(fp) {
			same++
			if partitions == 1 && !bytes.Equal(zgot[i].id, fgot[i].id) {
				t.Errorf("message %d: Zilla's id %x and Ferry's %x differ", i, zgot[i].id, fgot[i].id)
			}
		}
	}
	t.Logf("%d of %d message ids at the same position on both", same, len(zgot))
	if partitions == 1 && same != len(zgot) {
		t.Errorf("on one partition every id must be the same on both; %d of %d are", same, len(zgot))
	}

	// resume subscribes on cc with id and checks it gets exactly the
	// records after id's position, then a record produced live.
	resume := func(t *testing.T, side string, cc *grpc.ClientConn, id []byte) {
		p, err := parseID(id)
		if err != nil {
			t.Fatal(err)
		}
		want := resumeFrom(order, p)
		sub := subscribe(t, cc, md("last-message-id", fetch.EncodeIDText(id)))
		defer sub.cancel()
		got := sub.take(t, len(want))
		checkStream(t, side, got, want, recs)
		marker := fmt.Sprintf("%s-live-%d", sel, len(order))
		produce(marker)
		if next := sub.take(t, 1); next[0].msg != marker {
			t.Errorf("%s: after the resumed records came %q, want the live %q", side, next[0].msg, marker)
		}
	}
	// Zilla's id after its first message lists the partitions that
	// delivered nothing yet at a negative offset (on three partitions:
	// -1 here, -2 when the subscriber came after the records). Ferry
	// resumes such a partition from its earliest offset, so the records
	// written since are all there.
	t.Run("ZillaIDOnFerry/First", func(t *testing.T) { resume(t, "Ferry", s.ferryCC, zgot[0].id) })
	t.Run("ZillaIDOnFerry/Middle", func(t *testing.T) { resume(t, "Ferry", s.ferryCC, zgot[4].id) })
	t.Run("ZillaIDOnFerry/Last", func(t *testing.T) { resume(t, "Ferry", s.ferryCC, zgot[len(zgot)-1].id) })
	t.Run("FerryIDOnZilla/First", func(t *testing.T) { resume(t, "Zilla", s.zillaCC, fgot[0].id) })
	t.Run("FerryIDOnZilla/Middle", func(t *testing.T) { resume(t, "Zilla", s.zillaCC, fgot[4].id) })
	t.Run("FerryIDOnZilla/Last", func(t *testing.T) { resume(t, "Zilla", s.zillaCC, fgot[len(fgot)-1].id) })
}
