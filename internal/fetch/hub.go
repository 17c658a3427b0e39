package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
)

// entry is one record read by a hub, decoded and framed once for every
// subscriber at the tail.
type entry struct {
	part int32
	off  int64
	vlen int // the length of the record value at the start of frame
	key  []byte
	hdrs []kgo.RecordHeader
	// frame is the response message: the value and the message id of the
	// hub's position after this record.
	frame []byte
	meta  metadata.MD
}

// Hub is the one reader of a topic (all its partitions) in this Ferry
// instance. Every subscriber at the tail is served from it: each record is
// read once, framed once and offered to every subscriber, whose filters
// decide. It keeps the last records in a ring, so a subscriber that caught
// up on a reader of its own can join without a gap or a duplicate.
type Hub struct {
	topic   string
	field   protowire.Number
	prefix  string
	cl      *kgo.Client
	cluster Cluster
	// refresh is how often the hub looks for partitions the topic gained.
	refresh time.Duration
	logger  *slog.Logger
	loops   sync.WaitGroup // the reader and the partition watcher
	cancel  context.CancelFunc
	// counts are the counters of the Hubs the hub belongs to.
	counts *counts

	// mu guards everything below. The reading goroutine holds it while it
	// offers a record to the subscribers, which never blocks.
	mu   sync.Mutex
	next Position // the hub's position: next offset per partition
	// floor is, per partition, the lowest offset the ring still covers:
	// every record of the partition at or after it is in the ring.
	floor Position
	ring  []*entry
	head  int // index of the oldest entry once the ring is full
	subs  map[*subscriber]struct{}
	// born are the partitions the topic gained while the hub ran, with
	// the offset the hub read each from: a position that does not list
	// one starts it from there (as a message id's unlisted partitions
	// start from the earliest offset).
	born Position
}

// startHub starts reading topic on cluster at its current end on every
// partition.
func startHub(ctx context.Context, cluster Cluster, topic string, field protowire.Number, prefix string, ringSize int, refresh time.Duration, counts *counts, logger *slog.Logger) (*Hub, error) {
	ends, err := listOffsets(ctx, cluster, topic, kafka.AtEnd())
	if err != nil {
		return nil, fmt.Errorf("listing offsets of topic %q: %w", topic, err)
	}
	cl, err := cluster.NewPartitionReader(topic, ends, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		topic: topic, field: field, prefix: prefix, cl: cl, cluster: cluster, refresh: refresh, logger: logger,
		cancel: cancel, counts: counts,
		next: ends, floor: ends.clone(),
		ring: make([]*entry, 0, ringSize),
		subs: map[*subscriber]struct{}{},
		born: Position{},
	}
	h.loops.Add(1)
	go func() {
		defer h.loops.Done()
		h.run(ctx)
	}()
	if refresh > 0 {
		h.loops.Add(1)
		go func() {
			defer h.loops.Done()
			h.watchPartitions(ctx)
		}()
	}
	return h, nil
}

// watchPartitions adds the partitions the topic gains while the hub runs,
// read from their start, every refresh.
func (h *Hub) watchPartitions(ctx context.Context) {
	t := time.NewTicker(h.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if h.cluster.Reachable() != nil {
			continue
		}
		starts, err := h.cluster.ListOffsets(ctx, h.topic, kafka.AtStart())
		if err != nil {
			if ctx.Err() == nil {
				h.logger.Debug("listing the partitions of a fetched topic", "topic", h.topic, "err", err)
			}
			continue
		}
		h.addPartitions(starts)
	}
}

// addPartitions starts reading the partitions of starts the hub does not
// read yet, from the offsets given.
func (h *Hub) addPartitions(starts Position) {
	add := map[int32]kgo.Offset{}
	h.mu.Lock()
	for p, off := range starts {
		if _, ok := h.next[p]; !ok {
			h.next[p], h.floor[p], h.born[p] = off, off, off
			add[p] = kgo.NewOffset().At(off)
		}
	}
	h.mu.Unlock()
	if len(add) > 0 {
		h.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{h.topic: add})
		h.logger.Info("fetched topic gained partitions: reading them from their start", "topic", h.topic, "partitions", len(add))
	}
}

// listOffsets returns every partition's offset at position at, through the
// cluster's shared admin client; a topic without partitions is an error.
// The caller says what it was listing.
func listOffsets(ctx context.Context, cluster Cluster, topic string, at kafka.Position) (Position, error) {
	p, err := cluster.ListOffsets(ctx, topic, at)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("topic %q has no partitions", topic)
	}
	return p, nil
}

func (h *Hub) run(ctx context.Context) {
	for {
		fs := h.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			h.logger.Warn("reading topic for subscribers", append(kafka.FetchErrorAttrs(t, p), "err", err)...)
		})
		fs.EachRecord(h.add)
	}
}

// add frames a record once and offers it to every subscriber.
func (h *Hub) add(r *kgo.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Offset < h.next[r.Partition] {
		return
	}
	h.next[r.Partition] = r.Offset + 1
	h.counts.records.Add(1)
	e := &entry{part: r.Partition, off: r.Offset, vlen: len(r.Value), key: r.Key, hdrs: r.Headers,
		frame: withID(r.Value, h.field, h.next), meta: metaOf(r.Headers, h.prefix)}
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, e)
	} else {
		old := h.ring[h.head]
		h.floor[old.part] = old.off + 1
		h.ring[h.head] = e
		h.head = (h.head + 1) % len(h.ring)
	}
	for s := range h.subs {
		if !s.offer(e) {
			delete(h.subs, s)
		}
	}
}

// join attaches s, which has read on its own up to pos, to the tail. It
// succeeds when the ring covers pos on every partition and pos is not ahead
// of the hub: s then gets the ring's records it has not seen, framed with
// its own position, and from then on shares the hub's frames. Otherwise it
// returns false and s reads on (behind) or waits (ahead).
func (h *Hub) join(s *subscriber, pos Position) (joined, ahead bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, next := range h.next {
		at, ok := pos[p]
		if !ok {
			// A partition the topic gained since the caller's reader
			// started: the caller starts it from where the hub did.
			b, born := h.born[p]
			if !born {
				return false, false
			}
			at = b
		}
		if at > next {
			return false, true
		}
		if at < h.floor[p] {
			return false, false
		}
	}
	// Join only when what the ring holds past pos fits in the
	// subscriber's queue; a caller further behind reads on.
	n, behind := len(h.ring), 0
	for i := 0; i < n; i++ {
		if e := h.ring[(h.head+i)%n]; e.off >= pos[e.part] {
			behind++
		}
	}
	if behind > cap(s.ch)-len(s.ch) {
		return false, false
	}
	pos = pos.clone()
	for i := 0; i < n; i++ {
		e := h.ring[(h.head+i)%n]
		if e.off < pos[e.part] {
			continue
		}
		pos[e.part] = e.off + 1
		if !s.offer(&entry{part: e.part, off: e.off, vlen: e.vlen, key: e.key, hdrs: e.hdrs, meta: e.meta,
			frame: withID(e.frame[:e.vlen], h.field, pos)}) {
			return true, false // cut off already; nothing more to do
		}
	}
	// Now s's position is the hub's, record for record: the hub's frames
	// carry the right ids for it.
	h.subs[s] = struct{}{}
	return true, false
}

// subscribeAtTail attaches s at the hub's current position.
func (h *Hub) subscribeAtTail(s *subscriber) Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	return h.next.clone()
}

// subscribers counts the subscribers the hub serves.
func (h *Hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

// close stops the reader and waits for it.
func (h *Hub) close() {
	h.cancel()
	h.loops.Wait()
	h.cl.Close()
}

// metaOf turns a record's meta: headers into response metadata, nil when
// there are none.
func metaOf(hs []kgo.RecordHeader, prefix string) metadata.MD {
	if md := layout.MetadataFromHeaders(hs, prefix); len(md) > 0 {
		return md
	}
	return nil
}
