package fetch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/kafka"
)

// fakeCluster reads an embedded broker's topics.
type fakeCluster struct{ seeds []string }

func (f fakeCluster) ListOffsets(ctx context.Context, topic string, at kafka.Position) (map[int32]int64, error) {
	return nil, nil
}
func (f fakeCluster) NewPartitionReader(topic string, from map[int32]int64, maxWait time.Duration, opts ...kgo.Opt) (*kgo.Client, error) {
	parts := map[int32]kgo.Offset{}
	for p, o := range from {
		parts[p] = kgo.NewOffset().At(o)
	}
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(f.seeds...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}), kgo.FetchMaxWait(maxWait)}, opts...)...)
}
func (f fakeCluster) Reachable() error          { return nil }
func (f fakeCluster) NoteUnreachable(err error) {}

// trainHub returns a hub of topic "t" (with parts partitions) on an
// embedded broker, reading nothing itself on partition 0 and not reading
// the others, whose trains have windows of wbytes, and a producer that
// writes to the partition a record names.
func trainHub(t *testing.T, parts int32, wbytes int64) (*Hub, *kgo.Client) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	ctx, cancel := context.WithCancel(context.Background())
	far := Position{0: 1 << 40}
	h := &Hub{topic: "t", field: 15, cluster: fakeCluster{c.ListenAddrs()}, ctx: ctx, cancel: cancel, counts: &counts{},
		maxBytes: 1 << 20, tconf: trainConfig{maxBytes: wbytes},
		window: window{next: far, floor: far.clone(), grew: make(chan struct{}), born: Position{}, done: ctx.Done()}}
	h.logger = slog.Default()
	return h, prod
}

// produce writes n records of 1,000 bytes to partition p, one batch each.
func produce(t *testing.T, prod *kgo.Client, p int32, n int) {
	val := make([]byte, 1000)
	for i := 0; i < n; i++ {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "t", Partition: p, Value: val}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTrainMovesOnWhenFastestLeaves: a rider that boards at the end of a
// train that stopped reading ahead of its fastest rider moves it on once
// that rider left.
func TestTrainMovesOnWhenFastestLeaves(t *testing.T) {
	h, prod := trainHub(t, 1, 64<<10)
	produce(t, prod, 0, 300)
	slots := make(chan struct{}, 1)
	slots <- struct{}{}
	a := &cursor{s: &subscriber{}}
	if err := h.startTrain(a, Position{0: 0}, func() { <-slots }); err != nil {
		t.Fatal(err)
	}
	tr := a.t
	// The train reads until it is half a window ahead of A, which reads
	// nothing.
	var next Position
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		s := tr.span.Load()
		if s[1][0] > 0 && (next != nil && next[0] == s[1][0]) {
			break
		}
		next = s[1]
	}
	t.Logf("train paused at %v, front %d", next, tr.front.Load())
	b := &cursor{s: &subscriber{}}
	if !h.board(b, next.clone()) {
		t.Fatal("B did not board")
	}
	a.leave()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	buf := make([]*entry, 16)
	got := 0
	for ctx.Err() == nil && got == 0 {
		batch, err := b.w.read(ctx, b, buf)
		if err != nil {
			break
		}
		got += len(batch)
		for _, e := range batch {
			b.pass(e, 15)
		}
	}
	if got == 0 {
		t.Errorf("B got nothing in 3s though %d records follow its position: the train stalls (front %d)", 300-next[0], tr.front.Load())
	}
	b.leave()
	h.cancel()
	h.loops.Wait()
}

// TestWindowRefusesPartitionsNotRead: a position naming a partition the
// window does not read (a train started before the hub gained it) neither
// joins nor counts as covered, so its records of that partition are not
// lost nor, back in the hub, sent twice.
func TestWindowRefusesPartitionsNotRead(t *testing.T) {
	h := cachedHub(t, 20, 1<<20)
	pos := Position{0: h.floor[0], 1: h.floor[1]}
	c := &cursor{s: &subscriber{}}
	if joined, _ := h.join(c, pos); !joined {
		t.Fatalf("the cache's floor %v does not join", pos)
	}
	c.leave()
	pos[2] = 0
	if joined, ahead := h.join(c, pos); joined || ahead {
		t.Errorf("position %v naming partition 2, which the cache does not read: joined %t, ahead %t", pos, joined, ahead)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.covers(pos) {
		t.Errorf("the cache covers %v, which names partition 2", pos)
	}
}

// TestTrainGainsHubPartitions: a partition the hub gains while a train
// runs is read by the train too, from where the hub started it, even once
// the hub's cache dropped that partition's first records: the train's
// riders get every record of it, as the hub's callers do.
func TestTrainGainsHubPartitions(t *testing.T) {
	h, prod := trainHub(t, 2, 1<<20)
	produce(t, prod, 0, 25)
	produce(t, prod, 1, 25)
	slots := make(chan struct{}, 1)
	slots <- struct{}{}
	c := &cursor{s: &subscriber{}}
	if err := h.startTrain(c, Position{0: 0}, func() { <-slots }); err != nil {
		t.Fatal(err)
	}
	// The hub gains partition 1 from offset 0, and its cache has dropped
	// the partition's first 20 records since.
	h.mu.Lock()
	h.next[1], h.floor[1], h.born[1] = 25, 20, 0
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]*entry, 16)
	got := map[int32]int{}
	for ctx.Err() == nil && (got[0] < 25 || got[1] < 25) {
		batch, err := c.w.read(ctx, c, buf)
		if err != nil {
			break
		}
		for _, e := range batch {
			if e.off != int64(got[e.part]) {
				t.Fatalf("partition %d: offset %d, want %d", e.part, e.off, got[e.part])
			}
			got[e.part]++
			c.pass(e, 15)
		}
	}
	if got[0] != 25 || got[1] != 25 {
		t.Errorf("the rider got %v records by partition in 5 s, want 25 of each: the train does not read the partition its hub gained", got)
	}
	c.leave()
	h.cancel()
	h.loops.Wait()
}

// TestIdleTrainArrives: a train whose topic is written no more still sees
// the hub's cache come up to its position, and its rider is told, so that
// the rider moves to the cache and the catch-up reader is given back
// without waiting for a record.
func TestIdleTrainArrives(t *testing.T) {
	h, prod := trainHub(t, 1, 1<<20)
	produce(t, prod, 0, 10)
	slots := make(chan struct{}, 1)
	slots <- struct{}{}
	c := &cursor{s: &subscriber{}}
	if err := h.startTrain(c, Position{0: 0}, func() { <-slots }); err != nil {
		t.Fatal(err)
	}
	tr := c.t
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]*entry, 16)
	for got := 0; got < 10; {
		batch, err := c.w.read(ctx, c, buf)
		if err != nil {
			t.Fatalf("after %d records: %v", got, err)
		}
		for _, e := range batch {
			c.pass(e, 15)
		}
		got += len(batch)
	}
	// The hub's cache now starts where the train ends.
	h.mu.Lock()
	h.next[0], h.floor[0] = 10, 10
	h.mu.Unlock()
	start := time.Now()
	for !tr.arrived.Load() {
		batch, err := c.w.read(ctx, c, buf)
		if err != nil {
			t.Fatalf("the train did not reach the hub's cache, which holds its position, in 5 s on an idle topic: %v", err)
		}
		if len(batch) > 0 {
			t.Fatalf("%d records after the topic's last", len(batch))
		}
	}
	t.Logf("arrived after %s", time.Since(start).Round(time.Millisecond))
	c.leave()
	h.cancel()
	h.loops.Wait()
}
