package fetch

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// errBehind is a cursor's position evicted from the cache.
var errBehind = errors.New("the cache no longer holds the position")

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
	// in says whether the cursor counts among the hub's subscribers.
	in bool
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

// join places c in the cache at pos. It succeeds when the cache covers pos
// on every partition and pos is not ahead of the hub; otherwise the caller
// reads behind (on a backfill or catch-up reader) or waits (ahead).
func (h *Hub) join(c *cursor, pos Position) (joined, ahead bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
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
		if o > next {
			return false, true
		}
		if o < h.floor[p] {
			return false, false
		}
		at[p] = o
		atFloor = atFloor && o == h.floor[p]
		atTail = atTail && o == next
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
	c.in = true
	h.subs.Add(1)
	return true, false
}

// joinTail places c at the cache's end.
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

func (h *Hub) joinTail(c *cursor) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	c.seq = h.base + int64(len(h.ents))
	c.aligned, c.pos, c.last = c.seq, h.next.clone(), nil
	c.in = true
	h.subs.Add(1)
}

// leave takes c out of the hub's subscribers.
func (h *Hub) leave(c *cursor) {
	if c.in {
		c.in = false
		h.subs.Add(-1)
	}
}

// read returns the entries from c's place on, at most len(buf), waiting
// for the hub to read some when c is at the end. It returns errBehind when
// the cache dropped c's place.
func (h *Hub) read(ctx context.Context, c *cursor, buf []*entry) ([]*entry, error) {
	for {
		h.mu.RLock()
		if c.seq < h.base {
			h.mu.RUnlock()
			return nil, errBehind
		}
		n := copy(buf, h.ents[c.seq-h.base:])
		grew := h.grew
		h.mu.RUnlock()
		if n > 0 {
			return buf[:n], nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-h.ctx.Done():
			return nil, status.Error(codes.Unavailable, "the topic's reader stopped: retry with the last message id")
		}
	}
}

// evict drops the oldest entries while the cache is over its bounds,
// keeping the newest entry whatever its size. h.mu is held.
func (h *Hub) evict() {
	var n, size int64
	for len(h.ents) > 1 && (h.bytes > h.maxBytes || h.maxAge > 0 && time.Since(h.ents[0].ts) > h.maxAge) {
		e := h.ents[0]
		h.ents[0] = nil
		h.ents = h.ents[1:]
		h.base++
		h.bytes -= e.size
		h.floor[e.part] = e.off + 1
		n++
		size += e.size
	}
	if n > 0 {
		h.counts.evicted.Add(n)
		h.counts.evictedBytes.Add(size)
	}
}

// covers says whether the cache, or the hub's reading ahead, covers pos on
// every partition. h.mu is held.
func (h *Hub) covers(pos Position) bool {
	for p, floor := range h.floor {
		o, ok := pos[p]
		if !ok {
			if _, born := h.born[p]; born {
				continue
			}
			return false
		}
		if o < floor {
			return false
		}
	}
	return true
}

// cacheStats returns the cache's size.
func (h *Hub) cacheStats() (records int, size int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.ents), h.bytes
}
