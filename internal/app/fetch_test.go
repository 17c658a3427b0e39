package app_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/testkit"
)

const fanoutMethod = "/example.FanoutService/FanoutServerStream"

// fetched is one response message of a fetch route.
type fetched struct {
	msg string
	id  []byte
}

// subscription is an open FanoutServerStream call.
type subscription struct {
	s      grpc.ClientStream
	cancel context.CancelFunc
}

func subscribe(t testing.TB, cc *grpc.ClientConn, md metadata.MD) *subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, fanoutMethod)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	empty := []byte{}
	if err := s.SendMsg(&empty); err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return &subscription{s: s, cancel: cancel}
}

// next reads one message.
func (s *subscription) next() (fetched, error) {
	var b []byte
	if err := s.s.RecvMsg(&b); err != nil {
		return fetched{}, err
	}
	id, _ := fetch.IDFromMessage(b, 32767)
	return fetched{msg: unecho(b), id: id}, nil
}

// take reads n messages.
func (s *subscription) take(t testing.TB, n int) []fetched {
	t.Helper()
	out := make([]fetched, 0, n)
	for len(out) < n {
		f, err := s.next()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, err)
		}
		out = append(out, f)
	}
	return out
}

func msgs(fs []fetched) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.msg
	}
	return out
}

func produceMsgs(t testing.TB, cl *kgo.Client, topic string, key string, hdrs []kgo.RecordHeader, ms ...string) {
	t.Helper()
	var recs []*kgo.Record
	for _, m := range ms {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: echo(m), Headers: hdrs})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func fetchRoute(topic, extra string) string {
	return fmt.Sprintf(`
  - when: [{method: example.FanoutService/FanoutServerStream}]
    fetch:
      topic: %s
%s`, topic, extra)
}

// TestFetchReplayThenLive: a subscriber gets what the topic holds, then
// what is written while it listens; the first record's meta: headers are
// the response headers, and each message carries its message id.
func TestFetchReplayThenLive(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, topic, "k", []kgo.RecordHeader{{Key: "meta:x-source", Value: []byte("kafka")}}, "a", "b", "c")
	a := startFerry(t, fetchRoute(topic, ""))
	sub := subscribe(t, dial(t, a), nil)
	defer sub.cancel()
	got := sub.take(t, 3)
	produceMsgs(t, prod, topic, "k", nil, "d", "e")
	got = append(got, sub.take(t, 2)...)
	if want := []string{"a", "b", "c", "d", "e"}; !reflect.DeepEqual(msgs(got), want) {
		t.Errorf("messages = %q, want %q", msgs(got), want)
	}
	// Partition 0, next offset 1 for the first message: 01 02 00 02.
	if fmt.Sprintf("%x", got[0].id) != "01020002" || fmt.Sprintf("%x", got[4].id) != "0102000a" {
		t.Errorf("message ids = %x ... %x, want 01020002 ... 0102000a", got[0].id, got[4].id)
	}
	if h, _ := sub.s.Header(); len(h.Get("x-source")) != 1 || h.Get("x-source")[0] != "kafka" {
		t.Errorf("response headers = %v, want x-source: kafka from the first record", h)
	}
}

// TestFetchFilters: filters are ORed, key and headers inside one ANDed, and
// values can come from the caller's metadata.
func TestFetchFilters(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	h := func(kv ...string) []kgo.RecordHeader {
		var hs []kgo.RecordHeader
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	produceMsgs(t, prod, topic, "room-1", h("type", "chat", "user", "ann"), "r1-chat-ann")
	produceMsgs(t, prod, topic, "room-1", h("type", "join", "user", "bob"), "r1-join-bob")
	produceMsgs(t, prod, topic, "room-2", h("type", "chat", "user", "ann"), "r2-chat-ann")
	produceMsgs(t, prod, topic, "room-2", h("type", "chat", "user", "cid"), "r2-chat-cid")
	produceMsgs(t, prod, topic, "end", nil, "end")
	a := startFerry(t, fmt.Sprintf(`
  - name: static
    when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-case: static}}]
    fetch:
      topic: %[1]s
      filters:
        - {key: room-1, headers: {type: chat}}
        - {headers: {user: cid}}
        - {key: end}
  - name: mine
    when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-case: mine}}]
    fetch:
      topic: %[1]s
      filters:
        - {key_from_metadata: x-room, headers_from_metadata: {user: x-user}}
        - {key: end}
`, topic))
	cc := dial(t, a)
	for _, tc := range []struct {
		md   metadata.MD
		want []string
	}{
		{metadata.Pairs("x-case", "static"), []string{"r1-chat-ann", "r2-chat-cid", "end"}},
		{metadata.Pairs("x-case", "mine", "x-room", "room-2", "x-user", "ann"), []string{"r2-chat-ann", "end"}},
		{metadata.Pairs("x-case", "mine", "x-room", "room-1", "x-user", "bob"), []string{"r1-join-bob", "end"}},
	} {
		sub := subscribe(t, cc, tc.md)
		got := msgs(sub.take(t, len(tc.want)))
		sub.cancel()
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: got %q, want %q", tc.md, got, tc.want)
		}
	}
	sub := subscribe(t, cc, metadata.Pairs("x-case", "mine", "x-room", "room-1"))
	defer sub.cancel()
	if _, err := sub.next(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("missing filter metadata: %v, want InvalidArgument", err)
	}
}

// TestFetchBadRequests: an id that does not decode and a non-empty request
// are INVALID_ARGUMENT, never a silent replay.
func TestFetchBadRequests(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fetchRoute(topic, ""))
	cc := dial(t, a)
	for _, md := range []metadata.MD{
		metadata.Pairs("last-message-id", "!!not base64!!"),
		metadata.Pairs("last-message-id", "AgIAAg"), // version 2
		metadata.Pairs("last-message-id-bin", "\x01\x04\x00"),
		metadata.Pairs("last-message-id", fetch.EncodeIDText([]byte{1, 2, 8, 2})), // partition 4 does not exist
	} {
		sub := subscribe(t, cc, md)
		_, err := sub.next()
		sub.cancel()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", md, err)
		}
	}
	ctx := testkit.Context(t, 10*time.Second)
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, fanoutMethod)
	if err != nil {
		t.Fatal(err)
	}
	notEmpty := echo("x")
	s.SendMsg(&notEmpty)
	s.CloseSend()
	var b []byte
	if err := s.RecvMsg(&b); status.Code(err) != codes.InvalidArgument {
		t.Errorf("non-empty request: %v, want InvalidArgument", err)
	}
}

// TestFetchResumeExact reconnects a subscriber again and again, with the
// last message id it saw, alternately to two Ferry instances, while records
// are written to a 3-partition topic: every record is seen exactly once.
func TestFetchResumeExact(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	apps := []*grpc.ClientConn{dial(t, startFerry(t, fetchRoute(topic, ""))), dial(t, startFerry(t, fetchRoute(topic, "")))}
	const n = 600
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i += 10 {
			var ms []string
			for j := i; j < i+10; j++ {
				ms = append(ms, fmt.Sprintf("m%04d", j))
			}
			produceMsgs(t, prod, topic, "", nil, ms...)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	seen := map[string]int{}
	var last []byte
	for round := 0; len(seen) < n; round++ {
		if round > 500 {
			t.Fatalf("only %d of %d records after %d reconnects", len(seen), n, round)
		}
		var md metadata.MD
		if last != nil {
			md = metadata.Pairs("last-message-id", fetch.EncodeIDText(last))
		}
		sub := subscribe(t, apps[round%2], md)
		for k := 0; k < 7+round%40 && len(seen) < n; k++ {
			f, err := sub.next()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			seen[f.msg]++
			last = f.id
		}
		sub.cancel() // a forced disconnect, mid-stream
	}
	<-done
	var dups []string
	for m, c := range seen {
		if c != 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", m, c))
		}
	}
	sort.Strings(dups)
	if len(seen) != n || len(dups) > 0 {
		t.Errorf("saw %d distinct records of %d; seen more than once: %v", len(seen), n, dups)
	}
}

// TestFetchSlowSubscriber: a subscriber that stops reading falls behind
// the hub onto a reader of its own, and gets every record once it reads
// again, while 100 others get every record from the hub, undelayed.
func TestFetchSlowSubscriber(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, fetchRoute(topic, "      max_buffered_per_subscriber: 64\n"))
	cc := dial(t, a)
	// The slow subscriber has a connection of its own with fixed flow
	// control windows, so how much it buffers in transit is bounded.
	slowCC, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer slowCC.Close()
	slow := subscribe(t, slowCC, nil)
	defer slow.cancel()
	const subs, n = 100, 300
	fast := make([]*subscription, subs)
	for i := range fast {
		fast[i] = subscribe(t, cc, nil)
		defer fast[i].cancel()
	}
	// Wait until every subscriber is attached: a probe record reaches all.
	prod := kit.Client(t, kgo.ProducerLinger(0))
	big := string(make([]byte, 2048))
	produceMsgs(t, prod, topic, "", nil, "probe")
	for _, s := range fast {
		if f := s.take(t, 1); f[0].msg != "probe" {
			t.Fatalf("probe = %q", f[0].msg)
		}
	}
	var wg sync.WaitGroup
	lat := make([]time.Duration, 0, subs*n)
	var mu sync.Mutex
	sent := make([]time.Time, n)
	got := make([]atomic.Int64, subs) // records each fast subscriber read
	for i, s := range fast {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer got[i].Store(n) // an ended subscriber holds nobody up
			for j := 0; j < n; j++ {
				f, err := s.next()
				if err != nil {
					t.Errorf("subscriber %d after %d: %v", i, j, err)
					return
				}
				if want := fmt.Sprintf("%d", j); f.msg[:len(want)] != want {
					t.Errorf("subscriber %d got %q at %d", i, f.msg[:8], j)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(sent[j]))
				mu.Unlock()
				got[i].Store(int64(j + 1))
			}
		}()
	}
	// Paced, as a live feed is: a record is written once every fast
	// subscriber read all but the last 16, so they stay well within their
	// queues however slow the machine is, while the slow one, which reads
	// nothing, fills its queue.
	for j := 0; j < n; j++ {
		deadline := time.Now().Add(30 * time.Second)
		for i := range got {
			for got[i].Load() < int64(j-16) {
				if time.Now().After(deadline) {
					t.Fatalf("fast subscriber %d read %d of the %d records written", i, got[i].Load(), j)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		sent[j] = time.Now()
		produceMsgs(t, prod, topic, "", nil, fmt.Sprintf("%d|%s", j, big))
	}
	wg.Wait()
	// The slow one, read at last, gets every record in order.
	if f := slow.take(t, 1); f[0].msg != "probe" {
		t.Fatalf("slow subscriber: first message %q, want probe", f[0].msg)
	}
	for j, f := range slow.take(t, n) {
		if want := fmt.Sprintf("%d|", j); f.msg[:len(want)] != want {
			t.Fatalf("slow subscriber: message %d is %q", j, f.msg[:8])
		}
	}
	// Its catch-up reader joins the hub once it caught up.
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 0 }, "the slow subscriber to rejoin the hub")
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		t.Logf("slow subscriber read all %d messages late; %d others: produce-to-delivery p50 %s, p99 %s",
			n+1, subs, lat[len(lat)/2], lat[len(lat)*99/100])
	}
}

// TestFetchCutOff: subscribers that fall behind ride catch-up readers; one
// whose position no reader holds, and that finds none free within
// fetch.catch_up_wait, is cut off with RESOURCE_EXHAUSTED after the
// messages it had, and resumes from the last message id without a gap.
func TestFetchCutOff(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	cfg := ferryConfig(t, fetchRoute(topic, "      max_buffered_per_subscriber: 8\n"))
	cfg.Fetch.MaxCatchUpReaders, cfg.Fetch.CatchUpWait = 1, 100*time.Millisecond
	// A catch-up reader keeps 32 records, and reads 16 ahead of its
	// fastest subscriber.
	cfg.Fetch.CatchUpWindowBytes = 64 << 10
	// The topic's cache holds 28 records of the 500: a subscriber that
	// does not read falls out of it.
	cfg.Fetch.Cache.MaxBytes = 64 << 10
	a := startConfig(t, cfg)
	slowCC := func() *grpc.ClientConn {
		cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, topic, "", nil, "probe")
	var subs []*subscription
	for i := 0; i < 2; i++ {
		s := subscribe(t, slowCC(), nil)
		defer s.cancel()
		if f := s.take(t, 1)[0]; f.msg != "probe" {
			t.Fatalf("subscriber %d: first message %q, want probe", i, f.msg)
		}
		subs = append(subs, s)
	}
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 2 }, "both subscribers at the tail")
	const n = 500
	big := string(make([]byte, 2048))
	var ms []string
	for j := 0; j < n; j++ {
		ms = append(ms, fmt.Sprintf("%d|%s", j, big))
	}
	// The burst's first 300 records: the second subscriber reads them as
	// they come, in the cache; the first, which reads none, falls out of
	// it. Then the first reads 20, which makes it take its next records,
	// where the cache no longer is: it takes the one catch-up reader, and
	// stops reading there. The reader stops 16 records ahead of it, far
	// from the cache.
	const early, taken = 300, 20
	// A few records per batch: a fetch brings whole batches.
	produce := func(ms []string) {
		for i := 0; i < len(ms); i += 4 {
			produceMsgs(t, prod, topic, "", nil, ms[i:min(i+4, len(ms))]...)
		}
	}
	type reading struct {
		last fetched
		err  error
	}
	readEarly := make(chan reading, 1)
	go func() {
		var r reading
		for i := 0; i < early && r.err == nil; i++ {
			r.last, r.err = subs[1].next()
		}
		readEarly <- r
	}()
	produce(ms[:early])
	re := <-readEarly
	if re.err != nil {
		t.Fatalf("second subscriber, reading the first %d: %v", early, re.err)
	}
	last := re.last
	subs[0].take(t, taken)
	waitFor(t, func() bool { st := a.FetchStats(); return st.CatchUps == 1 && st.Riders == 1 }, "the first subscriber's catch-up reader")
	// The rest: the second subscriber, reading nothing, falls out of the
	// cache some 70 records on, where no catch-up reader is; it is cut
	// off once it read what it had.
	produce(ms[early:])
	cutRead := early
	var err error
	for cutRead < n {
		var f fetched
		if f, err = subs[1].next(); err != nil {
			break
		}
		last = f
		cutRead++
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second subscriber ended with %v after %d messages, want RESOURCE_EXHAUSTED", err, cutRead)
	}
	// The first gets every record, on its catch-up reader and then from
	// the cache.
	for j, f := range subs[0].take(t, n-taken) {
		if want := fmt.Sprintf("%d|", taken+j); f.msg[:len(want)] != want {
			t.Fatalf("first subscriber: message %d is %q, want %s...", taken+j, f.msg[:8], want)
		}
	}
	cutLast := last
	// The other one caught up and gave the reader back; the cut one
	// resumes from its last message id with the rest.
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 0 }, "the catch-up reader to be free")
	r := subscribe(t, dial(t, a), metadata.Pairs("last-message-id", fetch.EncodeIDText(cutLast.id)))
	defer r.cancel()
	for j, f := range r.take(t, n-cutRead) {
		if want := fmt.Sprintf("%d|", cutRead+j); f.msg[:len(want)] != want {
			t.Fatalf("resumed subscriber: message %d is %q, want %s...", j, f.msg[:8], want)
		}
	}
}

// TestFetchReaders: one Kafka reader per topic serves every subscriber at
// the tail; subscribers from behind read on their own only until they
// joined; the reader stops when the last subscriber leaves.
func TestFetchReaders(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, topic, "", nil, "old-1", "old-2", "old-3")
	a := startFerry(t, fmt.Sprintf(`
  - when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-from: start}}]
    fetch: {topic: %[1]s}
  - when: [{method: example.FanoutService/FanoutServerStream}]
    fetch: {topic: %[1]s, start: latest}
`, topic))
	cc := dial(t, a)
	var subs []*subscription
	for round := 0; round < 5; round++ {
		for i := 0; i < 10; i++ {
			subs = append(subs, subscribe(t, cc, nil))
		}
		early := subscribe(t, cc, metadata.Pairs("x-from", "start"))
		early.take(t, 3+round) // the old records, then this round's live one
		subs = append(subs, early)
		// A caller at the tail gets what is written once the hub serves
		// it; nothing tells the caller when that is.
		waitFor(t, func() bool { return a.FetchStats().Subscribers == len(subs) }, "every subscriber to be served by the hub")
		produceMsgs(t, prod, topic, "", nil, fmt.Sprintf("live-%d", round))
		for _, s := range subs[len(subs)-11 : len(subs)-1] {
			s.take(t, 1)
		}
		if st := a.FetchStats(); st.Hubs != 1 {
			t.Errorf("round %d: %d hubs, want 1", round, st.Hubs)
		}
		// Half of the subscribers leave.
		for _, s := range subs[:len(subs)/2] {
			s.cancel()
		}
		subs = subs[len(subs)/2:]
	}
	waitFor(t, func() bool { return a.FetchStats().CatchUps == 0 }, "catch-up readers to stop")
	for _, s := range subs {
		s.cancel()
	}
	waitFor(t, func() bool { return a.FetchStats() == fetch.Stats{} }, "the hub to stop with its last subscriber")
}

func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFanoutExample starts examples/fanout and streams its topic, whole and
// filtered by the caller's room.
func TestFanoutExample(t *testing.T) {
	kit.CheckLeaks(t)
	cfg := loadExample(t, "fanout")
	// A topic of this run's own, so a real cluster's older records do not
	// count.
	topic := "messages"
	if testkit.Real() {
		topic = kit.Topic(t, 1, nil)
		for i := range cfg.Routes {
			cfg.Routes[i].Fetch.Topic = topic
		}
	}
	a := startConfig(t, cfg)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.AllowAutoTopicCreation(), kgo.SeedBrokers(a.KafkaAddrs("default")...))
	produceMsgs(t, prod, topic, "lobby", nil, "hello everyone")
	produceMsgs(t, prod, topic, "room-7", nil, "hello room 7")
	cc := dial(t, a)
	all := subscribe(t, cc, nil)
	defer all.cancel()
	if got := msgs(all.take(t, 2)); !reflect.DeepEqual(got, []string{"hello everyone", "hello room 7"}) {
		t.Errorf("all = %q", got)
	}
	room := subscribe(t, cc, metadata.Pairs("x-scope", "room", "x-room", "room-7"))
	defer room.cancel()
	if got := msgs(room.take(t, 1)); !reflect.DeepEqual(got, []string{"hello room 7"}) {
		t.Errorf("room-7 = %q", got)
	}
}

// produceNewPartition writes r to a partition just added to its topic,
// once the producer's metadata knows it.
func produceNewPartition(t testing.TB, prod *kgo.Client, r *kgo.Record) {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	for deadline := time.Now().Add(20 * time.Second); ; {
		err := prod.ProduceSync(ctx, r).FirstErr()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("producing to the new partition %d: %v", r.Partition, err)
		}
		prod.ForceMetadataRefresh()
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFetchNewPartitions: partitions a fetched topic gains while its hub
// runs are read from their start: a subscriber at the tail gets their
// records, with message ids that list them.
func TestFetchNewPartitions(t *testing.T) {
	topic := kit.Topic(t, 1, nil)
	cfg := ferryConfig(t, fetchRoute(topic, ""))
	cfg.Fetch.PartitionRefresh = 100 * time.Millisecond
	a := startConfig(t, cfg)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceMsgs(t, prod, topic, "k", nil, "a")
	sub := subscribe(t, dial(t, a), nil)
	defer sub.cancel()
	sub.take(t, 1)
	ctx := testkit.Context(t, 30*time.Second)
	if resp, err := kadmClient(t).CreatePartitions(ctx, 1, topic); err != nil || resp.Error() != nil {
		t.Fatalf("adding a partition: %v %v", err, resp.Error())
	}
	produceNewPartition(t, prod, &kgo.Record{Topic: topic, Partition: 1, Value: echo("b")})
	got := sub.take(t, 1)
	if got[0].msg != "b" {
		t.Fatalf("got %q, want b from the new partition", got[0].msg)
	}
	// Partitions 0 (next 1) and 1 (next 1): 01 04 00 02 02 02.
	if id := fmt.Sprintf("%x", got[0].id); id != "010400020202" {
		t.Errorf("message id %s, want 010400020202 (both partitions)", id)
	}
}
