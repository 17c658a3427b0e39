package fetch

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
)

// entry is one record read by a hub, decoded and framed once for every
// subscriber whose position its frame's message id is.
type entry struct {
	part int32
	off  int64
	vlen int // the length of the record value at the start of frame
	key  []byte
	hdrs []kgo.RecordHeader
	// frame is the response message: the value and the message id of the
	// position after this record.
	frame []byte
	// msg is frame as the response message, with grpc-go's buffers,
	// built once and sent as it is to every caller sent the entry (see
	// frame.Frame); nil for entries sent to one caller.
	msg *frame.Frame
	// conv is the entry converted by the last fetch route of format json
	// that sent it (see jsonFrames.frame).
	conv atomic.Pointer[converted]
	meta metadata.MD
	// ts is the record's timestamp, for fetch.cache.max_age; size is
	// what the entry costs the cache.
	ts   time.Time
	size int64
}

// entryOverhead is what an entry costs besides its bytes: the entry, its
// pointer in the cache, the slice and map headers it holds, and its
// frame as grpc-go's buffers.
const entryOverhead = 220

// newEntry frames r with the message id of pos, the position after r. The
// key and headers are copied: a cached entry must not pin the fetch buffer
// they were read into.
func newEntry(r *kgo.Record, field protowire.Number, prefix string, pos Position) *entry {
	e := &entry{part: r.Partition, off: r.Offset, vlen: len(r.Value), ts: r.Timestamp,
		frame: withID(r.Value, field, pos), meta: metaOf(r.Headers, prefix)}
	e.msg = &frame.Frame{Bytes: e.frame, Buf: mem.BufferSlice{mem.SliceBuffer(e.frame)}}
	size := entryOverhead + len(e.frame)
	if len(r.Key) > 0 {
		e.key = bytes.Clone(r.Key)
		size += len(e.key)
	}
	if len(r.Headers) > 0 {
		e.hdrs = make([]kgo.RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			e.hdrs[i] = kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)}
			size += 2 * (32 + len(h.Key) + len(h.Value)) // the header, and its metadata entry if meta:
		}
	}
	e.size = int64(size)
	return e
}

// Hub is the one live reader of a topic (all its partitions) in this Ferry
// instance, and the topic's cache: the records it read last, within
// fetch.cache.max_bytes and max_age, each framed once. Every subscriber
// whose position the cache holds reads it through a cursor of its own, at
// its own pace; a subscriber starting before the cache is served by the
// hub's one backfill reader, which reads the records before the cache into
// it when they fit (see backfill.go).
type Hub struct {
	topic   string
	field   protowire.Number
	prefix  string
	cl      *kgo.Client
	cluster Cluster
	// refresh is how often the hub looks for partitions the topic gained.
	refresh time.Duration
	logger  *slog.Logger
	loops   sync.WaitGroup // the reader, the partition watcher and a backfill
	ctx     context.Context
	cancel  context.CancelFunc
	// counts are the counters of the Hubs the hub belongs to.
	counts *counts
	// maxBytes and maxAge bound the cache (fetch.cache).
	maxBytes int64
	maxAge   time.Duration
	// window is the cache. Its mu guards filling, outgrew and closed too.
	window
	// filling is the backfill running, if any.
	filling *backfill
	// outgrew is where the last backfill that outgrew the cache began,
	// and entrySize the mean size of the entries it read.
	outgrew   Position
	entrySize int64
	// starts are the partitions' log starts as the hub last listed them,
	// for resumable.
	starts Position
	closed bool

	// trains are the catch-up readers of the callers behind the cache
	// (see train.go). tmu guards them; it is taken before a train's mu and
	// never with the hub's. smu orders train starts: it is taken before
	// tmu and the hub's mu.
	smu    sync.Mutex
	tmu    sync.Mutex
	trains []*train
	// tconf configures the trains.
	tconf trainConfig
}

// hubConfig is what every hub of a Hubs shares.
type hubConfig struct {
	refresh  time.Duration
	maxBytes int64
	maxAge   time.Duration
	counts   *counts
	logger   *slog.Logger
	train    trainConfig
}

// startHub starts reading topic on cluster at its current end on every
// partition.
func startHub(ctx context.Context, cluster Cluster, k hubKey, hc hubConfig) (*Hub, error) {
	ends, err := listOffsets(ctx, cluster, k.topic, kafka.AtEnd())
	if err != nil {
		return nil, fmt.Errorf("listing offsets of topic %q: %w", k.topic, err)
	}
	cl, err := cluster.NewPartitionReader(k.topic, ends, 500*time.Millisecond)
	if err != nil {
		return nil, err
	}
	// The log starts, for callers resuming before the cache; without
	// them such callers list the offsets themselves.
	starts, _ := listOffsets(ctx, cluster, k.topic, kafka.AtStart())
	hctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		topic: k.topic, field: k.field, prefix: k.prefix, cl: cl, cluster: cluster, refresh: hc.refresh, logger: hc.logger,
		ctx: hctx, cancel: cancel, counts: hc.counts, maxBytes: hc.maxBytes, maxAge: hc.maxAge, tconf: hc.train, starts: starts,
		window: window{next: ends, floor: ends.clone(), grew: make(chan struct{}), born: Position{}, done: hctx.Done()},
	}
	h.loops.Add(1)
	go func() {
		defer h.loops.Done()
		h.run(hctx)
	}()
	if h.refresh > 0 {
		h.loops.Add(1)
		go func() {
			defer h.loops.Done()
			h.watchPartitions(hctx)
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
// read yet, from the offsets given, and keeps starts as the log starts.
func (h *Hub) addPartitions(starts Position) {
	h.mu.Lock()
	h.starts = starts
	add := h.gainLocked(starts)
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
		h.mu.Lock()
		n := len(h.ents)
		fs.EachRecord(h.add)
		if len(h.ents) > n {
			h.evict()
			h.notify()
		}
		h.mu.Unlock()
	}
}

// add appends r to the cache. h.mu is held.
func (h *Hub) add(r *kgo.Record) {
	if h.window.add(r, h.field, h.prefix) {
		h.counts.records.Add(1)
	}
}

// subscribers counts the callers reading the hub's cache.
func (h *Hub) subscribers() int { return int(h.subs.Load()) }

// riders counts the callers reading on the hub's trains.
func (h *Hub) riders() int {
	h.tmu.Lock()
	defer h.tmu.Unlock()
	n := 0
	for _, t := range h.trains {
		n += int(t.subs.Load())
	}
	return n
}

// resumable returns the position a resume id names when it needs no
// listing of the topic's offsets: it names only partitions the hub reads,
// and every one of them (or leaves out only partitions the hub saw born),
// each at an offset from 0 to the hub's. An offset before the cache is
// raised to the partition's log start as the hub last listed it (at its
// start, and every fetch.partition_refresh), as a listing would raise it;
// without one the caller takes the listing path. An offset retention
// deleted since is read from the log start by a new reader anyway (kgo
// starts a partition it read nothing of there on OFFSET_OUT_OF_RANGE).
func (h *Hub) resumable(id Position) (Position, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.reads(id) {
		return nil, false
	}
	pos := make(Position, len(h.next))
	for p, next := range h.next {
		o, ok := id[p]
		if !ok {
			if o, ok = h.born[p]; !ok {
				return nil, false
			}
		}
		if o < 0 || o > next {
			return nil, false
		}
		if o < h.floor[p] {
			// Before the cache: records retention deleted must not be
			// waited for (an emptied partition has none to come).
			start, ok := h.starts[p]
			if !ok {
				return nil, false
			}
			o = max(o, start)
		}
		pos[p] = o
	}
	return pos, true
}

// errHubClosed is a hub closed while a caller started reading it.
var errHubClosed = status.Error(codes.Unavailable, "the topic's reader stopped: retry with the last message id")

// close stops the reader, the watcher, a backfill and the trains, and
// waits for them.
func (h *Hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
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
