package produce

import (
	"bytes"
	"container/list"
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
)

// Reply is one record read from a reply topic, decoded once and shared by
// every call waiting for its correlation id. Its value is Ferry's own copy
// (see decode).
type Reply = layout.Reply

// Approximate heap costs of what a kept reply allocates beside its bytes,
// measured on amd64 (see TestReplySizeAccounting): the Reply itself, a
// metadata map with one bucket, each metadata entry's value slice, and the
// per-correlation-id bookkeeping (keptReplies, its list element and map
// entry).
const (
	replyOverhead     = 112
	metaMapOverhead   = 272
	metaEntryCost     = 48
	keptEntryOverhead = 224
)

// replySize approximates the heap a kept reply holds. The value is Ferry's
// own copy (see decode), so its capacity is all it pins.
func replySize(r *Reply) int64 {
	n := int64(cap(r.Value)+len(r.Message)) + replyOverhead
	if r.Meta != nil {
		n += metaMapOverhead
	}
	for k, vs := range r.Meta {
		n += int64(len(k)) + metaEntryCost
		for _, v := range vs {
			n += int64(len(v)) + 16
		}
	}
	return n
}

// heapFactor is the heap a long-lived byte costs, per byte: the byte
// itself and the headroom Go's garbage collector lets the heap grow by
// before it collects, GOGC percent of what is live (100 unless the GOGC
// environment variable says otherwise). Kept replies live for minutes, so
// replies.max_cached_bytes, which bounds the memory they cost, allows them
// max_cached_bytes / heapFactor bytes. With GOGC=off the heap is bounded by
// GOMEMLIMIT alone, and a byte costs a byte.
func heapFactor(gogc string) float64 {
	if gogc == "off" {
		return 1
	}
	p, err := strconv.Atoi(gogc)
	if err != nil || p < 0 {
		p = 100
	}
	return 1 + float64(p)/100
}

// transient reports whether a terminal status says the call may succeed if
// made again, so it must not be replayed to a retry: the server or Kafka
// was unavailable, or time or resources ran out, rather than the request
// being answered.
func transient(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// ReaderOptions configure a reply reader.
type ReaderOptions struct {
	Topic   string
	Names   config.HeaderNames
	Replies config.Replies
	Logger  *slog.Logger
}

// Reader is the one reader of a reply topic in this Ferry instance. It reads
// the whole topic without a consumer group, so instances sharing a reply
// topic each see every reply and keep only those their calls wait for, and
// hands each reply to the calls waiting for its correlation id. It also keeps
// recent replies, bounded by age and bytes, so that a call retried with the
// same idempotency-key is answered from them.
//
// The reader is subscribed before any request is produced: it starts at a
// timestamp (now minus the lookback), so every reply written after it was
// created is read no matter when its fetch position is resolved.
type Reader struct {
	opts   ReaderOptions
	layout layout.Layout
	cl     *kgo.Client
	logger *slog.Logger

	caughtUp chan struct{} // closed once everything older than the start was read
	done     chan struct{} // closed when run returns
	cancel   context.CancelFunc
	// closeOnce makes Close idempotent: the client is closed once.
	closeOnce sync.Once

	// mu guards everything below. It is held only for map and list updates,
	// never while a call sends to its client.
	mu sync.Mutex
	// budget is what the kept replies may count: replies.max_cached_bytes
	// less the garbage collector's headroom (see heapFactor).
	budget  int64
	waiters map[string][]*Waiter
	kept    map[string]*keptReplies
	order   *list.List // of *keptReplies, oldest first
	bytes   int64
	// behind holds the end offset, per partition, that the reader must reach
	// before it has read everything written before it started.
	behind map[int32]int64
}

// keptReplies are the replies seen for one correlation id.
type keptReplies struct {
	id      string
	replies []*Reply
	bytes   int64
	// at is when the first reply was written (eviction by age), last when
	// the latest was (a stream that stopped without its terminal record).
	at, last time.Time
	// end is the terminal reply, once read.
	end  *Reply
	elem *list.Element
}

// StartReader starts reading opts.Topic with the client cl, which must
// already be set to consume that topic from start (see kafka.Cluster.NewReader).
// The reader owns cl and closes it.
func StartReader(ctx context.Context, cl *kgo.Client, start time.Time, opts ReaderOptions) *Reader {
	ctx, cancel := context.WithCancel(ctx)
	r := &Reader{
		opts:     opts,
		layout:   layout.New(opts.Names),
		cl:       cl,
		logger:   opts.Logger.With("reply_topic", opts.Topic),
		caughtUp: make(chan struct{}),
		done:     make(chan struct{}),
		cancel:   cancel,
		budget:   int64(float64(opts.Replies.MaxCachedBytes) / heapFactor(os.Getenv("GOGC"))),
		waiters:  map[string][]*Waiter{},
		kept:     map[string]*keptReplies{},
		order:    list.New(),
		behind:   map[int32]int64{},
	}
	r.measureBacklog(ctx, start)
	go r.run(ctx)
	return r
}

// measureBacklog records how far the reader must read before it has seen
// every reply written in the lookback window before it started. A topic that
// cannot be listed yet (it does not exist) has no backlog.
func (r *Reader) measureBacklog(ctx context.Context, start time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := kafka.ListOffsetsWith(ctx, r.cl, r.opts.Topic, kafka.AtEnd())
	var starts map[int32]int64
	if err == nil {
		starts, err = kafka.ListOffsetsWith(ctx, r.cl, r.opts.Topic, kafka.AtOrAfter(start))
	}
	if err != nil {
		r.logger.Warn("reply topic not listed; replies written before this start cannot be replayed", "err", err)
		close(r.caughtUp)
		return
	}
	for p, end := range ends {
		if s, ok := starts[p]; ok && s >= 0 && s < end {
			r.behind[p] = end
		}
	}
	if len(r.behind) == 0 {
		close(r.caughtUp)
	}
}

// CaughtUp is closed once the reader has read every reply written before it
// started (within the lookback).
func (r *Reader) CaughtUp() <-chan struct{} { return r.caughtUp }

func (r *Reader) run(ctx context.Context) {
	defer close(r.done)
	for {
		fetches := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			r.logger.Warn("reading reply topic", append(kafka.FetchErrorAttrs(topic, p), "err", err)...)
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, rec := range p.Records {
				r.handle(rec)
			}
			if n := len(p.Records); n > 0 {
				r.advance(p.Partition, p.Records[n-1].Offset+1)
			}
		})
	}
}

// advance notes that partition p was read up to next.
func (r *Reader) advance(p int32, next int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	end, ok := r.behind[p]
	if !ok || next < end {
		return
	}
	delete(r.behind, p)
	if len(r.behind) == 0 {
		close(r.caughtUp)
	}
}

// handle decodes one record and hands it to its waiters and the kept set.
func (r *Reader) handle(rec *kgo.Record) {
	id, reply, ok := r.decode(rec)
	if !ok {
		return
	}
	now := time.Now()
	// A reply's age is its record's: a reader that starts reads the last
	// lookback of replies in a moment, and those are as old as they were
	// written, for eviction and for telling a stopped call from a running
	// one. A timestamp from the future (a skewed clock) counts as now.
	at := rec.Timestamp
	if at.IsZero() || at.After(now) {
		at = now
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.waiters[id] {
		w.push(reply)
	}
	k := r.kept[id]
	if k == nil {
		k = &keptReplies{id: id, at: at, bytes: keptEntryOverhead + int64(len(id))}
		k.elem = r.order.PushBack(k)
		r.kept[id] = k
		r.bytes += k.bytes
	}
	k.replies = append(k.replies, reply)
	k.last = at
	if reply.End {
		k.end = reply
	}
	sz := replySize(reply)
	k.bytes += sz
	r.bytes += sz
	r.evict(now)
}

// drop forgets the kept replies of one correlation id. Call with mu held.
func (r *Reader) drop(k *keptReplies) {
	r.order.Remove(k.elem)
	delete(r.kept, k.id)
	r.bytes -= k.bytes
}

// evict drops the oldest kept replies while they are older than the lookback
// or over the byte budget.
func (r *Reader) evict(now time.Time) {
	cutoff := now.Add(-r.opts.Replies.Lookback)
	for e := r.order.Front(); e != nil; e = r.order.Front() {
		k := e.Value.(*keptReplies)
		if r.bytes <= r.budget && !k.at.Before(cutoff) {
			return
		}
		r.drop(k)
	}
}

// decode reads a reply record. A record without a correlation id is not a
// reply and is skipped.
func (r *Reader) decode(rec *kgo.Record) (string, *Reply, bool) {
	id, reply, ok := r.layout.ParseReply(rec, func(header string, err error) {
		r.logger.Debug("skipping reply header", "header", header, "err", err)
	})
	if !ok {
		return "", nil, false
	}
	// The value is copied: rec.Value points into the fetch's decompressed
	// batch, and a kept reply holding it would pin the whole batch, so that
	// max_cached_bytes would bound a fraction of the memory it keeps.
	reply.Value = bytes.Clone(reply.Value)
	return id, reply, true
}

// Subscribe registers a waiter for the replies of correlation id id. With
// replay, replies already kept for id are queued first, and found tells
// whether there were any: the call is then answered from them and its
// request is not written again. Only an answer is replayed, so kept replies
// are dropped instead, and found is false, when
//   - they end with a transient status (see transient): the retry is made
//     again, which is what a client retrying UNAVAILABLE expects;
//   - they have no terminal record and the last one arrived longer than
//     stale ago (stale > 0): the call stopped without an answer — its final
//     reply was lost, or its back end gave up — and waiting for it again
//     would never end.
//
// Registration and replay happen under one lock, so no reply is missed or
// seen twice.
func (r *Reader) Subscribe(id string, replay bool, limit int, stale time.Duration) (w *Waiter, found bool) {
	w = &Waiter{r: r, id: id, limit: limit, notify: make(chan struct{}, 1)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if k := r.kept[id]; replay && k != nil {
		switch {
		case k.end != nil && transient(k.end.Code):
			r.drop(k)
		case k.end == nil && stale > 0 && time.Since(k.last) > stale:
			r.drop(k)
		default:
			found = true
			for _, rep := range k.replies {
				w.push(rep)
			}
		}
	}
	r.waiters[id] = append(r.waiters[id], w)
	return w, found
}

// unsubscribe removes w; its queue is dropped.
func (r *Reader) unsubscribe(w *Waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiters[w.id]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(r.waiters, w.id)
	} else {
		r.waiters[w.id] = ws
	}
}

// Waiting returns how many calls wait for replies, for tests and metrics.
func (r *Reader) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ws := range r.waiters {
		n += len(ws)
	}
	return n
}

// CachedBytes returns what the kept replies count against
// replies.max_cached_bytes, for tests and metrics.
func (r *Reader) CachedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Close stops the reader and waits for it, which takes no longer than its
// poll takes to see the cancellation, so ctx is not used. Waiters still
// registered get no more replies; their calls end by their own deadlines
// or cancellation. Close is safe to call more than once.
func (r *Reader) Close(context.Context) error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		r.cl.Close()
	})
	return nil
}

// Waiter receives the replies of one call, in topic order.
type Waiter struct {
	r      *Reader
	id     string
	limit  int
	notify chan struct{}

	// queue and overflow are guarded by the reader's mu.
	queue    []*Reply
	overflow bool
}

// push queues a reply; called with the reader's mu held. A call whose client
// reads too slowly overflows instead of holding up the reader, which serves
// every other call too.
func (w *Waiter) push(rep *Reply) {
	if w.overflow {
		return
	}
	if len(w.queue) >= w.limit {
		w.overflow = true
	} else {
		w.queue = append(w.queue, rep)
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Notify is signalled whenever replies are queued.
func (w *Waiter) Notify() <-chan struct{} { return w.notify }

// Take returns the queued replies and whether the queue overflowed.
func (w *Waiter) Take(buf []*Reply) ([]*Reply, bool) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	buf = append(buf[:0], w.queue...)
	clear(w.queue)
	w.queue = w.queue[:0]
	return buf, w.overflow
}

// Close unsubscribes the waiter.
func (w *Waiter) Close() { w.r.unsubscribe(w) }
