package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// partRecord is the value the cache tests write: its partition and its
// index there, which is its offset in a fresh topic, padded to pad bytes.
func partRecord(p int32, i int, pad int) string {
	s := fmt.Sprintf("p%d-%06d|", p, i)
	return s + strings.Repeat("x", max(pad-len(s), 0))
}

// writeParts writes the records from..to-1 of every partition of a
// parts-partition topic, a batch per index block.
func writeParts(t testing.TB, cl *kgo.Client, topic string, parts int32, from, to, pad int) {
	t.Helper()
	for i := from; i < to; i += 100 {
		var recs []*kgo.Record
		for j := i; j < min(i+100, to); j++ {
			for p := int32(0); p < parts; p++ {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: echo(partRecord(p, j, pad))})
			}
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Error(err)
			return
		}
	}
}

// messageID encodes a version-1 message id, as a client resuming holds.
func messageID(pos map[int32]int64) []byte {
	b := []byte{1}
	b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(len(pos))))
	for p := int32(0); p < int32(len(pos)); p++ {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(p)))
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(pos[p]))
	}
	return b
}

// readAll reads until the subscription has every partition up to end
// (exclusive), and checks that each partition comes in order from its
// start (from[p], or wherever the first message says when from is nil)
// without a gap or a duplicate.
func readAll(s *subscription, parts int32, end int64, from map[int32]int64) error {
	next := map[int32]int64{}
	for p, o := range from {
		next[p] = o
	}
	done := func() bool {
		for p := int32(0); p < parts; p++ {
			if o, ok := next[p]; !ok || o < end {
				return false
			}
		}
		return true
	}
	for !done() {
		f, err := s.next()
		if err != nil {
			return fmt.Errorf("at %v: %w", next, err)
		}
		var p int32
		var off int64
		if _, err := fmt.Sscanf(f.msg, "p%d-%06d|", &p, &off); err != nil {
			return fmt.Errorf("message %.20q: %w", f.msg, err)
		}
		want, ok := next[p]
		if !ok && from == nil {
			want = off // a caller from the tail starts anywhere
		}
		if off != want {
			return fmt.Errorf("partition %d: offset %d, want %d (after %v)", p, off, want, next)
		}
		next[p] = off + 1
	}
	return nil
}

// caller is a caller of the cache tests: its metadata, and the position
// it starts from (nil: the tail).
type caller struct {
	md   metadata.MD
	from map[int32]int64
}

// resuming is a caller resuming with a message id of pos.
func resuming(pos map[int32]int64) caller {
	return caller{md: metadata.Pairs("last-message-id", fetch.EncodeIDText(messageID(pos))), from: pos}
}

// cacheRoutes streams a topic from its start, or from the end with
// x-from: latest.
func cacheRoutes(topic, extra string) string {
	return fmt.Sprintf(`
  - when: [{method: example.FanoutService/FanoutServerStream, metadata: {x-from: latest}}]
    fetch: {topic: %[1]s, start: latest%[2]s}
  - when: [{method: example.FanoutService/FanoutServerStream}]
    fetch: {topic: %[1]s%[2]s}
`, topic, extra)
}

// TestFetchCacheJoinPositions: callers from the start, from message ids in
// the middle (their offsets interleaving unlike the hub's) and from the
// end, joining while records are written, each get every record from
// their position once, in order per partition — with a cache that holds
// the topic, and with one that holds little of it.
func TestFetchCacheJoinPositions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
	}{{"whole topic cached", 64 << 20}, {"small cache", 32 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			kit.CheckLeaks(t)
			const parts, n, pad = 3, 1200, 100
			topic := kit.Topic(t, parts, nil)
			prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			writeParts(t, prod, topic, parts, 0, n/2, pad)
			cfg := ferryConfig(t, cacheRoutes(topic, ""))
			cfg.Fetch.Cache.MaxBytes = tc.maxBytes
			a := startConfig(t, cfg)
			cc := dial(t, a)

			var callers []caller
			for i := 0; i < 3; i++ {
				callers = append(callers, caller{from: map[int32]int64{0: 0, 1: 0, 2: 0}})
				callers = append(callers, caller{md: metadata.Pairs("x-from", "latest")})
			}
			for _, pos := range []map[int32]int64{
				{0: 10, 1: 300, 2: 550}, {0: 599, 1: 0, 2: 200}, {0: 250, 1: 251, 2: 252},
				{0: 600, 1: 600, 2: 600}, {0: 480, 1: 20, 2: 599}, {0: 1, 1: 2, 2: 3},
			} {
				callers = append(callers, resuming(pos))
			}

			writing := make(chan struct{})
			go func() {
				defer close(writing)
				for i := n / 2; i < n; i += 50 {
					if i+50 >= n {
						// The last records go out once every caller
						// joined, so that the callers from the tail
						// have some to get.
						deadline := time.Now().Add(30 * time.Second)
						for st := a.FetchStats(); st.Subscribers+st.Riders < len(callers) && time.Now().Before(deadline); st = a.FetchStats() {
							time.Sleep(5 * time.Millisecond)
						}
					}
					writeParts(t, prod, topic, parts, i, i+50, pad)
					time.Sleep(5 * time.Millisecond)
				}
			}()
			var wg sync.WaitGroup
			for i, c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(time.Duration(i) * 20 * time.Millisecond) // joining as records come
					s := subscribe(t, cc, c.md)
					defer s.cancel()
					if err := readAll(s, parts, n, c.from); err != nil {
						t.Errorf("caller %d (%v): %v", i, c.md, err)
					}
				}()
			}
			wg.Wait()
			<-writing
			t.Logf("%+v", a.FetchCounts())
		})
	}
}

// TestFetchCacheBurst: a caller that reads at full speed gets a burst of
// 20,000 records, however few it takes at a time, without being cut off or
// needing a reader of its own.
func TestFetchCacheBurst(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	a := startFerry(t, cacheRoutes(topic, ", max_buffered_per_subscriber: 4"))
	s := subscribe(t, dial(t, a), metadata.Pairs("x-from", "latest"))
	defer s.cancel()
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 1 }, "the caller at the tail")
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const n = 20000
	go writeParts(t, prod, topic, 1, 0, n, 20)
	if err := readAll(s, 1, n, map[int32]int64{0: 0}); err != nil {
		t.Fatal(err)
	}
	if c := a.FetchCounts(); c.CutOffs != 0 || c.CatchUps != 0 {
		t.Errorf("counts %+v: want no cut-off and no catch-up reader", c)
	}
}

// TestFetchCacheEviction: a cache of 16 KiB drops the oldest records; a
// caller resuming from before it is served through a catch-up reader,
// every record once, and the counts show the eviction and the miss.
func TestFetchCacheEviction(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	cfg := ferryConfig(t, cacheRoutes(topic, ""))
	cfg.Fetch.Cache.MaxBytes = 16 << 10
	a := startConfig(t, cfg)
	cc := dial(t, a)
	tail := subscribe(t, cc, metadata.Pairs("x-from", "latest"))
	defer tail.cancel()
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 1 }, "the caller at the tail")
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const n = 500
	writeParts(t, prod, topic, 1, 0, n, 200)
	got := tail.take(t, n)
	st, c := a.FetchStats(), a.FetchCounts()
	if c.Evicted == 0 || c.EvictedBytes == 0 || st.CacheBytes > 16<<10 || st.CacheRecords >= n {
		t.Fatalf("after %d records of 200 bytes in a 16 KiB cache: stats %+v, counts %+v", n, st, c)
	}
	r := subscribe(t, cc, metadata.Pairs("last-message-id", fetch.EncodeIDText(got[9].id)))
	defer r.cancel()
	if err := readAll(r, 1, n, map[int32]int64{0: 10}); err != nil {
		t.Fatal(err)
	}
	if c2 := a.FetchCounts(); c2.CacheMisses != c.CacheMisses+1 || c2.CatchUps != c.CatchUps+1 {
		t.Errorf("counts %+v after a resume from before the cache (before: %+v): want one more miss and catch-up reader", c2, c)
	}
}

// TestFetchCachePrewarm: a pre-warmed topic's hub runs with no caller and
// holds the topic; a caller from the start is served from it with no
// Kafka reader of its own, and the hub stays when the caller leaves.
func TestFetchCachePrewarm(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 2, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const n = 150
	writeParts(t, prod, topic, 2, 0, n, 50)
	a := startFerry(t, cacheRoutes(topic, ", prewarm: true"))
	waitFor(t, func() bool { st := a.FetchStats(); return st.CacheRecords == 2*n && st.Backfills == 0 },
		"the pre-warmed cache to hold the topic")
	before := a.FetchCounts()
	s := subscribe(t, dial(t, a), nil)
	if err := readAll(s, 2, n, map[int32]int64{0: 0, 1: 0}); err != nil {
		t.Fatal(err)
	}
	s.cancel()
	c := a.FetchCounts()
	if c.CatchUps != before.CatchUps || c.Backfills != before.Backfills || c.CacheHits != before.CacheHits+1 {
		t.Errorf("counts %+v after a caller from the start (before: %+v): want one hit and no new reader", c, before)
	}
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 0 }, "the caller to leave")
	if st := a.FetchStats(); st.Hubs != 1 {
		t.Errorf("stats %+v: the pre-warmed hub stopped with its caller", st)
	}
}

// TestFetchCacheManyFromStart: 500 callers from the start of a 2,000-record
// topic all get every record, on one live reader, at most one backfill and
// at most fetch.max_catch_up_readers catch-up readers. (A million messages
// stay well within the calls' minute under the race detector.)
func TestFetchCacheManyFromStart(t *testing.T) {
	kit.CheckLeaks(t)
	const subs, n, bound = 500, 2000, 4
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	writeParts(t, prod, topic, 1, 0, n, 20)
	cfg := ferryConfig(t, cacheRoutes(topic, ""))
	cfg.Fetch.MaxCatchUpReaders = bound
	a := startConfig(t, cfg)
	var most atomic.Int64 // the most readers of the topic at once
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			st := a.FetchStats()
			if st.CatchUps > bound || st.Backfills > 1 || st.Hubs > 1 {
				t.Errorf("stats %+v: more readers than the bounds", st)
			}
			most.Store(max(most.Load(), int64(st.Hubs+st.Backfills+st.CatchUps)))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	ccs := make([]*grpc.ClientConn, 10)
	for i := range ccs {
		ccs[i] = dial(t, a)
	}
	var wg sync.WaitGroup
	for i := 0; i < subs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := subscribe(t, ccs[i%len(ccs)], nil)
			defer s.cancel()
			if err := readAll(s, 1, n, map[int32]int64{0: 0}); err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-watched
	c := a.FetchCounts()
	t.Logf("at most %d Kafka readers at once; counts %+v", most.Load(), c)
	if c.CacheHits+c.CacheMisses != subs || c.CatchUps > bound {
		t.Errorf("counts %+v: want %d callers counted, at most %d catch-up readers", c, subs, bound)
	}
}

// TestFetchTrains: a reconnect storm behind the cache — callers from the
// start and callers resuming from message ids all over a topic far larger
// than the cache (their offsets interleaving unlike any reader's), while
// records are written — share at most fetch.max_catch_up_readers catch-up
// readers, far fewer than the callers; each caller gets every record from
// its position once, in order per partition, and ends up reading the
// cache.
func TestFetchTrains(t *testing.T) {
	kit.CheckLeaks(t)
	const parts, n, more, pad, bound = 3, 1000, 200, 100, 4
	topic := kit.Topic(t, parts, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	writeParts(t, prod, topic, parts, 0, n, pad)
	cfg := ferryConfig(t, cacheRoutes(topic, ""))
	// The cache holds some 200 of the 3,000 records; a catch-up reader
	// keeps about 400.
	cfg.Fetch.Cache.MaxBytes = 64 << 10
	cfg.Fetch.CatchUpWindowBytes = 128 << 10
	cfg.Fetch.MaxCatchUpReaders = bound
	a := startConfig(t, cfg)
	var most atomic.Int64
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		for {
			st := a.FetchStats()
			if st.CatchUps > bound {
				t.Errorf("stats %+v: more catch-up readers than %d", st, bound)
			}
			most.Store(max(most.Load(), int64(st.CatchUps)))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	var callers []caller
	for i := 0; i < 40; i++ {
		callers = append(callers, caller{from: map[int32]int64{0: 0, 1: 0, 2: 0}})
		k := int64(i * n / 45)
		pos := map[int32]int64{0: k, 1: max(k-int64(i%7), 0), 2: min(k+int64(i%5)*3, n)}
		callers = append(callers, resuming(pos))
	}
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := n; i < n+more; i += 20 {
			writeParts(t, prod, topic, parts, i, i+20, pad)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	ccs := []*grpc.ClientConn{dial(t, a), dial(t, a), dial(t, a), dial(t, a)}
	var wg, read sync.WaitGroup
	done := make(chan struct{})
	for i, c := range callers {
		wg.Add(1)
		read.Add(1)
		go func() {
			defer wg.Done()
			s := subscribe(t, ccs[i%len(ccs)], c.md)
			defer s.cancel()
			err := readAll(s, parts, n+more, c.from)
			read.Done()
			if err != nil {
				t.Errorf("caller %d (from %v): %v", i, c.from, err)
				return
			}
			<-done // stay subscribed until every caller read all
		}()
	}
	read.Wait()
	<-writing
	// Every caller reads the cache now: no catch-up reader is left.
	waitFor(t, func() bool {
		st := a.FetchStats()
		return st.Subscribers == len(callers) && st.Riders == 0 && st.CatchUps == 0
	}, "every caller to read the cache")
	close(done)
	wg.Wait()
	close(stop)
	<-watched
	c := a.FetchCounts()
	t.Logf("%d callers behind the cache: at most %d catch-up readers at once, %d in all; counts %+v", len(callers), most.Load(), c.CatchUps, c)
	if c.CatchUps >= int64(len(callers))/2 {
		t.Errorf("%d catch-up readers started for %d callers: they did not share them", c.CatchUps, len(callers))
	}
}

// TestFetchResumeBeforeLogStart: a caller resuming with an id older than
// what retention kept, on a partition retention emptied, starts at the log
// start — here the end — from memory: no backfill waits for records that
// will never come, no catch-up reader starts, and the next record written
// reaches it.
func TestFetchResumeBeforeLogStart(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	writeParts(t, prod, topic, 1, 0, 10, 20)
	adm := kadmClient(t)
	del, err := adm.DeleteRecords(context.Background(), kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 10}}})
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	a := startFerry(t, cacheRoutes(topic, ""))
	cc := dial(t, a)
	// The first caller starts the topic's reader at the end.
	tail := subscribe(t, cc, metadata.Pairs("x-from", "latest"))
	defer tail.cancel()
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 1 }, "the caller at the tail")
	s := subscribe(t, cc, metadata.Pairs("last-message-id", fetch.EncodeIDText(messageID(map[int32]int64{0: 3}))))
	defer s.cancel()
	waitFor(t, func() bool { return a.FetchStats().Subscribers == 2 }, "the resumed caller in the cache")
	writeParts(t, prod, topic, 1, 10, 11, 20)
	if err := readAll(s, 1, 11, map[int32]int64{0: 10}); err != nil {
		t.Fatal(err)
	}
	if c := a.FetchCounts(); c.Backfills != 0 || c.CatchUps != 0 {
		t.Errorf("counts %+v: a resume before the log start of an emptied partition needed a Kafka reader", c)
	}
}

// TestFetchNewPartitionsBehindCache: a caller reading a topic far behind
// its cache, on a catch-up reader, when the topic gains a partition gets
// every record of the new partition too — also when the cache dropped the
// partition's first records before the caller got there — once each, in
// order, and ends up reading the cache.
func TestFetchNewPartitionsBehindCache(t *testing.T) {
	kit.CheckLeaks(t)
	const n, more, pad = 600, 150, 1000
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	writeParts(t, prod, topic, 1, 0, n, pad)
	cfg := ferryConfig(t, cacheRoutes(topic, ""))
	// The cache holds some 60 records, a catch-up reader some 120.
	cfg.Fetch.Cache.MaxBytes = 64 << 10
	cfg.Fetch.CatchUpWindowBytes = 128 << 10
	cfg.Fetch.PartitionRefresh = 100 * time.Millisecond
	a := startConfig(t, cfg)
	sub := subscribe(t, dial(t, a), nil)
	defer sub.cancel()
	next := map[int32]int64{0: 0, 1: 0}
	check := func(k int) {
		t.Helper()
		for range k {
			f, err := sub.next()
			if err != nil {
				t.Fatalf("at %v: %v", next, err)
			}
			var p int32
			var off int64
			if _, err := fmt.Sscanf(f.msg, "p%d-%06d|", &p, &off); err != nil {
				t.Fatalf("message %.20q: %v", f.msg, err)
			}
			if off != next[p] {
				t.Fatalf("partition %d: record %d, want %d (at %v)", p, off, next[p], next)
			}
			next[p]++
		}
	}
	check(50)
	waitFor(t, func() bool { return a.FetchStats().Riders == 1 }, "the caller to ride a catch-up reader")

	ctx := testkit.Context(t, 30*time.Second)
	if resp, err := kadmClient(t).CreatePartitions(ctx, 1, topic); err != nil || resp.Error() != nil {
		t.Fatalf("adding a partition: %v %v", err, resp.Error())
	}
	produceNewPartition(t, prod, &kgo.Record{Topic: topic, Partition: 1, Value: echo(partRecord(1, 0, pad))})
	var recs []*kgo.Record
	for i := 1; i < more; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Value: echo(partRecord(1, i, pad))})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The hub reads the new partition, and its cache drops the first of
	// its records, before the caller reads on.
	waitFor(t, func() bool { return a.FetchCounts().Records >= more }, "the hub to read the new partition")
	check(n - 50 + more)
	if next[0] != n || next[1] != more {
		t.Fatalf("at %v, want 0: %d and 1: %d", next, n, more)
	}
	waitFor(t, func() bool {
		st := a.FetchStats()
		return st.Riders == 0 && st.Subscribers == 1
	}, "the caller to read the cache")
}
