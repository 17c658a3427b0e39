package fetch

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/kafka"
)

// A train is a catch-up reader shared by the callers reading a topic behind
// its hub's cache: one Kafka reader from a position, read by every caller
// (rider) whose position its window holds, each through a cursor at its own
// pace, as the hub's cache is. Riders move to the hub's cache as soon as it
// holds their position, and the train stops when its last rider left.
//
// A train reads ahead of its fastest rider by at most half its window (and
// one fetch, at most a quarter of it), and keeps the entries behind the
// fastest rider while the window (fetch.catch_up_window_bytes) holds them:
// a rider further behind loses its place and rides another train, or one
// of its own. A caller behind the cache boards a train whose window
// holds its position, or starts one while a catch-up reader is free
// (fetch.max_catch_up_readers); otherwise it waits, and a train coming up to
// its position picks it up. So a reconnect storm of thousands of callers
// from the earliest record, or from message ids all over the topic, takes
// at most fetch.max_catch_up_readers Kafka readers per instance.
type train struct {
	// window holds what the train read: riders are its cursors. Its mu
	// guards riders and stopped too.
	window
	hub    *Hub
	cl     *kgo.Client
	cancel context.CancelFunc
	// riders are the cursors aboard.
	riders map[*cursor]struct{}
	// stopped is set once the last rider left: no one boards then.
	stopped bool
	// front is the sequence number after the last entry the fastest
	// rider took, which paces the reader.
	front atomic.Int64
	// took is signalled when a rider took entries: the reader, when it is
	// far enough ahead, waits for it.
	took chan struct{}
	// arrived is set once the hub's cache holds the train's position:
	// riders then move to the cache as soon as it holds theirs.
	arrived atomic.Bool
	// span is the window's floor and next, published for the callers
	// waiting to board.
	span atomic.Pointer[[2]Position]
}

// trainConfig configures a hub's trains.
type trainConfig struct {
	// maxBytes bounds a train's window (fetch.catch_up_window_bytes).
	maxBytes int64
}

// startTrain starts a train reading from pos, with c aboard, and runs it
// until its last rider left or the hub closes; free gives its catch-up
// reader back once it stopped. When the train cannot start, free is called
// before startTrain returns.
func (h *Hub) startTrain(c *cursor, pos Position, free func()) error {
	start := pos.clone()
	born := Position{}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		free()
		return errHubClosed
	}
	for p := range h.next {
		if _, ok := start[p]; !ok {
			// A partition the hub started after pos was taken: as in
			// the hub's cache, pos starts it from where the hub did.
			if b, ok := h.born[p]; ok {
				start[p], born[p] = b, b
			}
		}
	}
	h.loops.Add(1)
	h.mu.Unlock()
	// A fetch brings at most a quarter of the window (a record batch
	// larger than that comes whole), so that what the train reads ahead
	// of its riders stays within the window.
	fetchMax := int32(min(max(h.tconf.maxBytes/4, 1024), 1<<30))
	cl, err := h.cluster.NewPartitionReader(h.topic, start, 100*time.Millisecond,
		kgo.FetchMaxBytes(fetchMax), kgo.FetchMaxPartitionBytes(fetchMax))
	if err != nil {
		h.loops.Done()
		free()
		return kafka.Wrap("reading topic "+h.topic, err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	t := &train{
		window: window{next: start, floor: start.clone(), grew: make(chan struct{}), born: born, done: ctx.Done()},
		hub:    h, cl: cl, cancel: cancel, riders: map[*cursor]struct{}{}, took: make(chan struct{}, 1),
	}
	t.window.train = t
	t.publish()
	t.mu.Lock()
	t.joinLocked(c, start) // at the floor: it always joins
	t.riders[c], c.t = struct{}{}, t
	t.mu.Unlock()
	t.tookUpTo(c.seq)
	h.tmu.Lock()
	h.trains = append(h.trains, t)
	h.tmu.Unlock()
	h.counts.catchUps.Add(1)
	h.counts.trains.Add(1)
	go func() {
		defer h.loops.Done()
		defer free()
		t.run(ctx)
	}()
	return nil
}

// tryStartTrain starts a train at pos with c aboard when a catch-up reader
// (a token of slots) is free. Starts are one at a time per hub, each
// looking for a train to board first: callers starting together at one
// position, as a storm from the earliest record does, ride one train.
func (h *Hub) tryStartTrain(c *cursor, pos Position, slots chan struct{}) (bool, error) {
	h.smu.Lock()
	defer h.smu.Unlock()
	if h.board(c, pos) {
		return true, nil
	}
	select {
	case slots <- struct{}{}:
	default:
		return false, nil
	}
	return true, h.startTrain(c, pos, func() { <-slots })
}

// board puts c on a train whose window holds pos, if one runs.
func (h *Hub) board(c *cursor, pos Position) bool {
	h.tmu.Lock()
	defer h.tmu.Unlock()
	for _, t := range h.trains {
		if t.spans(pos) && t.board(c, pos) {
			return true
		}
	}
	return false
}

// spans says, without a lock, whether the train's window holds pos as it
// was last published.
func (t *train) spans(pos Position) bool {
	s := t.span.Load()
	floor, next := s[0], s[1]
	for p, o := range pos {
		f, ok := floor[p]
		if ok && (o < f || o > next[p]) {
			return false
		}
	}
	return true
}

func (t *train) board(c *cursor, pos Position) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	if joined, _ := t.joinLocked(c, pos); !joined {
		return false
	}
	t.riders[c], c.t = struct{}{}, t
	// A rider passed what is before its place: one boarding at the end,
	// when the fastest rider left, must still move the train on.
	t.tookUpTo(c.seq)
	return true
}

// leave takes c off the train, and stops the train when c was its last
// rider.
func (t *train) leave(c *cursor) {
	t.mu.Lock()
	delete(t.riders, c)
	t.subs.Add(-1)
	last := len(t.riders) == 0
	if last {
		t.stopped = true
	}
	t.mu.Unlock()
	if last {
		t.cancel()
	}
}

// publish makes the window's span visible to callers waiting to board.
func (t *train) publish() {
	t.mu.RLock()
	s := [2]Position{t.floor.clone(), t.next.clone()}
	t.mu.RUnlock()
	t.span.Store(&s)
}

// run reads while the train has riders: ahead of the fastest rider by at
// most half the window, dropping the oldest entries beyond the window.
func (t *train) run(ctx context.Context) {
	h := t.hub
	defer func() {
		t.cl.Close()
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		h.tmu.Lock()
		for i, o := range h.trains {
			if o == t {
				h.trains = append(h.trains[:i], h.trains[i+1:]...)
				break
			}
		}
		h.tmu.Unlock()
		h.counts.trains.Add(-1)
	}()
	limit := h.tconf.maxBytes
	for {
		t.mu.RLock()
		ahead := t.aheadBytes()
		t.mu.RUnlock()
		if ahead >= limit/2 {
			select {
			case <-t.took:
				continue
			case <-ctx.Done():
				return
			}
		}
		// The poll ends every trainCheck even with no records, so that an
		// idle train still takes the partitions its hub gained and sees
		// the hub's cache come up to it.
		pctx, cancel := context.WithTimeout(ctx, trainCheck)
		fs := t.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) && pctx.Err() != nil {
				return // the check's timeout, not Kafka's
			}
			h.logger.Warn("reading topic for callers behind its cache", append(kafka.FetchErrorAttrs(topic, p), "err", err)...)
		})
		t.gainPartitions()
		t.mu.Lock()
		n := len(t.ents)
		fs.EachRecord(func(r *kgo.Record) { t.add(r, h.field, h.prefix) })
		if len(t.ents) > n {
			t.trim(limit)
			t.notify()
		}
		next := t.next.clone()
		t.mu.Unlock()
		t.publish()
		if !t.arrived.Load() {
			h.mu.RLock()
			in := h.covers(next)
			h.mu.RUnlock()
			if in {
				// Wake the riders waiting at the train's end: they move
				// to the hub's cache.
				t.arrived.Store(true)
				t.mu.Lock()
				t.notify()
				t.mu.Unlock()
			}
		}
	}
}

// trainCheck is how often an idle train looks for partitions its hub
// gained and for the hub's cache coming up to it.
const trainCheck = time.Second

// gainPartitions starts reading the partitions the hub gained while the
// train ran (Hub.addPartitions), from where the hub started them, as the
// hub's callers get them: without them the train's riders would miss
// those partitions' records, and the train would never reach a cache that
// reads them.
func (t *train) gainPartitions() {
	h := t.hub
	h.mu.RLock()
	var gained Position
	if len(h.born) > 0 {
		gained = h.born.clone()
	}
	h.mu.RUnlock()
	if len(gained) == 0 {
		return
	}
	t.mu.Lock()
	add := t.gainLocked(gained)
	t.mu.Unlock()
	if len(add) > 0 {
		t.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{h.topic: add})
		t.publish()
	}
}

// aheadBytes estimates the bytes of the entries after the fastest rider's
// place. t.mu is held.
func (t *train) aheadBytes() int64 {
	if len(t.ents) == 0 {
		return 0
	}
	after := t.base + int64(len(t.ents)) - max(t.front.Load(), t.base)
	return after * t.bytes / int64(len(t.ents))
}

// trim drops the oldest entries that the fastest rider took while the
// window holds more than limit: riders still behind them lose their place
// (errBehind). t.mu is held.
func (t *train) trim(limit int64) {
	front := t.front.Load()
	for len(t.ents) > 1 && t.bytes > limit && t.base < front {
		t.dropOldest()
	}
}

// tookUpTo records that a rider of the window took entries up to seq.
func (w *window) tookUpTo(seq int64) {
	t := w.train
	if t == nil {
		return
	}
	for {
		f := t.front.Load()
		if seq <= f || t.front.CompareAndSwap(f, seq) {
			break
		}
	}
	select {
	case t.took <- struct{}{}:
	default:
	}
}
