package fetch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// errBehind is a cursor's position evicted from the cache.
var errBehind = errors.New("the cache no longer holds the position")

// window is a run of entries in the order a reader took them from a
// topic, read by cursors: a hub's cache, or a train's (see train.go).
type window struct {
	// mu guards everything below but subs. The window's reader holds it
	// to append what a fetch brought; cursors hold it shared to take
	// entries.
	mu   sync.RWMutex
	next Position // the reader's position: next offset per partition
	// floor is, per partition, the lowest offset the window covers:
	// every record of the partition at or after it is in the window.
	// The position before the first entry is floor; the message id of
	// every entry is the position after it.
	floor Position
	// ents are the entries, oldest first; ents[i] has sequence number
	// base+i, which cursors count in.
	ents  []*entry
	base  int64
	bytes int64
	// grew is closed, and replaced, whenever entries are appended.
	grew chan struct{}
	// born are the partitions the reader added after it started, with
	// the offset it read each from: a position that does not list one
	// starts it from there (as a message id's unlisted partitions start
	// from the earliest offset).
	born Position
	// done is closed when the reader stopped for good.
	done <-chan struct{}
	// subs counts the cursors in the window.
	subs atomic.Int64
	// train is the train whose window this is; nil for a hub's cache.
	train *train
}

// add frames a record once and appends it, unless the window has it
// already. w.mu is held.
func (w *window) add(r *kgo.Record, field protowire.Number, prefix string) bool {
	if r.Offset < w.next[r.Partition] {
		return false
	}
	w.next[r.Partition] = r.Offset + 1
	e := newEntry(r, field, prefix, w.next)
	w.ents = append(w.ents, e)
	w.bytes += e.size
	return true
}

// notify wakes the cursors waiting at the end. w.mu is held.
func (w *window) notify() {
	close(w.grew)
	w.grew = make(chan struct{})
}

// cursor is one subscriber's place in its hub's cache, read by the
// subscriber's own goroutine (the call's handler) at the pace the caller
// reads: nothing is queued for it, so a burst never cuts off a caller that
// keeps up, and a slow one costs no memory until the cache drops its
// position.
type cursor struct {
	s *subscriber
	// seq is the sequence number of the next entry to take.
	seq int64
	// aligned is the first sequence number from which the hub's frames
	// carry the caller's message ids. Before it, the caller's position
	// differs from the hub's on some partition (it resumed from an id
	// whose offsets interleave differently): entries it had are skipped,
	// and the others framed with pos.
	aligned int64
	// pos is the caller's position before the entries it has not passed
	// while seq < aligned, and before aligned after that.
	pos Position
	// last is the last entry passed at or after aligned, whose message id
	// is the caller's position since.
	last *entry
	// w is the window the cursor reads (nil when it reads none): its
	// hub's cache, or t's.
	w *window
	// t is the train the cursor rides, nil in the hub's cache.
	t *train
	// told is the last train whose arrival at the hub's cache a read
	// returned early for.
	told *train
}

// position returns the caller's position: after the last entry it passed,
// sent or filtered out.
func (c *cursor) position() (Position, error) {
	if c.last == nil {
		return c.pos.clone(), nil
	}
	id, err := entryID(c.last)
	if err != nil {
		return nil, err
	}
	return parseID(id)
}

// pass takes the next entry of the cache: the entry to send, or nil when
// the caller had it already or its filters do not select it.
func (c *cursor) pass(e *entry, field protowire.Number) *entry {
	seq := c.seq
	c.seq++
	if seq >= c.aligned {
		c.last = e
		if !c.s.selects(e.key, e.hdrs) {
			return nil
		}
		return e
	}
	if at, ok := c.pos[e.part]; ok && e.off < at {
		return nil
	}
	c.pos[e.part] = e.off + 1
	if !c.s.selects(e.key, e.hdrs) {
		return nil
	}
	return &entry{part: e.part, off: e.off, vlen: e.vlen, meta: e.meta, frame: withID(e.frame[:e.vlen], field, c.pos)}
}

// join places c in the window at pos. It succeeds when the window covers
// pos on every partition and pos is not ahead of it; otherwise the caller
// reads elsewhere (the hub's backfill, a train) or waits (ahead).
func (w *window) join(c *cursor, pos Position) (joined, ahead bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.joinLocked(c, pos)
}

// joinLocked is join with w.mu held.
func (w *window) joinLocked(c *cursor, pos Position) (joined, ahead bool) {
	h := w
	if !w.reads(pos) {
		return false, false
	}
	at := make(Position, len(h.next))
	atFloor, atTail := true, true
	for p, next := range h.next {
		o, ok := pos[p]
		if !ok {
			// A partition the topic gained since the caller's position
			// was taken: the caller starts it from where the hub did.
			b, born := h.born[p]
			if !born {
				return false, false
			}
			o = b
		}
		if o < h.floor[p] {
			// Behind on one partition is behind, whatever the others:
			// waiting for the reader would not help.
			return false, false
		}
		ahead = ahead || o > next
		at[p] = o
		atFloor = atFloor && o == h.floor[p]
		atTail = atTail && o == next
	}
	if ahead {
		return false, true
	}
	start, aligned := 0, 0
	switch {
	case atTail:
		start, aligned = len(h.ents), len(h.ents)
	case atFloor:
	default:
		// The caller needs the entries from the first one at or past its
		// position, and shares the hub's frames after the last one
		// before it.
		start = len(h.ents)
		for i, e := range h.ents {
			if e.off < at[e.part] {
				aligned = i + 1
			} else if start > i {
				start = i
			}
		}
	}
	c.seq, c.aligned, c.pos, c.last = h.base+int64(start), h.base+int64(aligned), at, nil
	c.w = w
	w.subs.Add(1)
	return true, false
}

// joinResumed is join for a position taken from a caller's message id:
// it joins only when the hub reads every partition the id names and its
// cache holds the position, which then needs no listing of the topic's
// offsets (a resuming caller, such as one of many reconnecting at once,
// gets its first record from memory).
func (h *Hub) joinResumed(c *cursor, pos Position) bool {
	h.mu.RLock()
	for p := range pos {
		if _, ok := h.next[p]; !ok {
			h.mu.RUnlock()
			return false
		}
	}
	h.mu.RUnlock()
	joined, _ := h.join(c, pos)
	return joined
}

// joinTail places c at the cache's end.
func (h *Hub) joinTail(c *cursor) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	c.seq = h.base + int64(len(h.ents))
	c.aligned, c.pos, c.last = c.seq, h.next.clone(), nil
	c.w = &h.window
	h.subs.Add(1)
}

// leave takes c out of the window it reads, the hub's cache or a train.
func (c *cursor) leave() {
	switch {
	case c.t != nil:
		c.t.leave(c)
	case c.w != nil:
		c.w.subs.Add(-1)
	}
	c.w, c.t = nil, nil
}

// read returns the entries from c's place on, at most len(buf), waiting
// for the window to take some when c is at its end; after a wait that
// brought none it returns none (a train handing its riders over wakes
// them so). It returns errBehind when the window dropped c's place.
func (w *window) read(ctx context.Context, c *cursor, buf []*entry) ([]*entry, error) {
	for waited := false; ; waited = true {
		w.mu.RLock()
		if c.seq < w.base {
			w.mu.RUnlock()
			return nil, errBehind
		}
		n := copy(buf, w.ents[c.seq-w.base:])
		grew := w.grew
		// Read under the lock the train's handover signal is sent under:
		// a rider that missed the signal sees the flag.
		arrived := w.train != nil && w.train.arrived.Load()
		w.mu.RUnlock()
		if n > 0 {
			w.tookUpTo(c.seq + int64(n))
			return buf[:n], nil
		}
		if waited {
			return buf[:0], nil
		}
		if arrived && c.told != w.train {
			// The train reached the hub's cache after the caller last
			// looked: it moves there now rather than at the train's next
			// records (none may come on an idle topic).
			c.told = w.train
			return buf[:0], nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-w.done:
			return nil, status.Error(codes.Unavailable, "the topic's reader stopped: retry with the last message id")
		}
	}
}

// dropOldest drops the window's oldest entry, moving its floor past it,
// and returns it. w.mu is held.
func (w *window) dropOldest() *entry {
	e := w.ents[0]
	w.ents[0] = nil
	w.ents = w.ents[1:]
	w.base++
	w.bytes -= e.size
	w.floor[e.part] = e.off + 1
	return e
}

// evict drops the oldest entries while the cache is over its bounds,
// keeping the newest entry whatever its size. h.mu is held.
func (h *Hub) evict() {
	var n, size int64
	for len(h.ents) > 1 && (h.bytes > h.maxBytes || h.maxAge > 0 && time.Since(h.ents[0].ts) > h.maxAge) {
		e := h.dropOldest()
		n++
		size += e.size
	}
	if n > 0 {
		h.counts.evicted.Add(n)
		h.counts.evictedBytes.Add(size)
	}
}

// covers says whether the window, or its reading ahead, covers pos on
// every partition. w.mu is held.
func (w *window) covers(pos Position) bool {
	if !w.reads(pos) {
		return false
	}
	for p, floor := range w.floor {
		o, ok := pos[p]
		if !ok {
			if o, ok = w.born[p]; !ok {
				return false
			}
		}
		if o < floor {
			return false
		}
	}
	return true
}

// reads says whether the window's reader reads every partition pos names:
// a position from a window that read a partition this one does not (the
// hub's, which gained it after a train started) must not lose it here.
// w.mu is held.
func (w *window) reads(pos Position) bool {
	for p := range pos {
		if _, ok := w.next[p]; !ok {
			return false
		}
	}
	return true
}

// gainLocked makes the window read the partitions of from it does not
// read yet, each from the offset given, as partitions the topic gained: a
// position that does not name one starts it there (born). It returns them
// as its reader's client adds them. w.mu is held.
func (w *window) gainLocked(from Position) map[int32]kgo.Offset {
	add := map[int32]kgo.Offset{}
	for p, off := range from {
		if _, ok := w.next[p]; !ok {
			w.next[p], w.floor[p], w.born[p] = off, off, off
			add[p] = kgo.NewOffset().At(off)
		}
	}
	return add
}

// cacheStats returns the cache's size.
func (h *Hub) cacheStats() (records int, size int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.ents), h.bytes
}
