package fetch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/status"
)

// backfill is a read of the records just before a hub's cache, into it:
// one at a time per hub, on a Kafka reader of its own, shared by every
// subscriber starting at or after from.
type backfill struct {
	from Position
	done chan struct{}
}

// backfillStall is how long a backfill waits for a record before it gives
// up (its subscribers then read on catch-up readers).
const backfillStall = 10 * time.Second

// fill has the cache cover pos when the records between pos and the
// cache's floor fit in it: it runs the hub's backfill, or waits for the
// one running, and returns once a backfill from pos or before ended, or
// when none will run. The caller then joins, or reads on a catch-up reader
// when the cache still does not cover pos.
func (h *Hub) fill(ctx context.Context, pos Position) error {
	for {
		h.mu.Lock()
		if h.covers(pos) {
			h.mu.Unlock()
			return nil
		}
		f := h.filling
		if f == nil {
			if h.closed || !h.fits(pos) {
				h.mu.Unlock()
				return nil
			}
			f = h.startBackfill(pos, false)
		}
		h.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if !before(f.from, pos) {
			continue // a backfill from further on ran; pos needs its own
		}
		return nil
	}
}

// before says whether a is at or before b on every partition of a.
func before(a, b Position) bool {
	for p, o := range a {
		if bo, ok := b[p]; ok && o > bo {
			return false
		}
	}
	return true
}

// fits estimates whether the records from pos to the cache's floor fit in
// the room the cache has left, at the mean size of the entries it holds,
// or, while it holds none, of those the last backfill that outgrew it
// read; with neither, the backfill finds out. h.mu is held.
//
// The cache only moves forward between backfills, so a position at or
// before one whose backfill outgrew the cache needs more still.
func (h *Hub) fits(pos Position) bool {
	if h.outgrew != nil && before(pos, h.outgrew) {
		return false // a backfill from a later position outgrew it
	}
	size := h.entrySize
	if len(h.ents) > 0 {
		size = h.bytes / int64(len(h.ents))
	}
	if size == 0 {
		return true // no estimate: the backfill finds out
	}
	var need int64
	for p, floor := range h.floor {
		if o, ok := pos[p]; ok && o < floor {
			need += floor - o
		}
	}
	// The records before the cache are the first it drops: they must fit
	// beside what it holds.
	return float64(need)*float64(size) <= float64(h.maxBytes-h.bytes)
}

// startBackfill starts reading from from up to the cache's floor. With
// newest, a backfill that does not fit keeps the newest records that do
// (pre-warming); otherwise it gives up as soon as it outgrows the cache.
// h.mu is held.
func (h *Hub) startBackfill(from Position, newest bool) *backfill {
	to := h.floor.clone()
	start := make(Position, len(to))
	for p, floor := range to {
		o, ok := from[p]
		if !ok || o > floor {
			o = floor
		}
		start[p] = o
	}
	f := &backfill{from: start, done: make(chan struct{})}
	h.filling = f
	h.loops.Add(1)
	go func() {
		defer h.loops.Done()
		h.counts.backfills.Add(1)
		h.counts.backfilling.Add(1)
		defer h.counts.backfilling.Add(-1)
		block, start, size, err := h.readRange(start, to, newest)
		h.mu.Lock()
		defer h.mu.Unlock()
		defer close(f.done)
		h.filling = nil
		switch {
		case err == nil:
			h.prepend(block, start, to, size)
		case errors.Is(err, errOutgrew):
			h.outgrew = f.from
			h.entrySize = size / int64(len(block))
		case h.ctx.Err() == nil:
			h.logger.Warn("reading a fetched topic's records before its cache", "topic", h.topic, "err", err)
		}
	}()
	return f
}

// errOutgrew is a backfill that outgrew the cache.
var errOutgrew = errors.New("the records before the cache do not fit in it")

// readRange reads the records from from up to to, framed as the position
// after each. With newest, the oldest are dropped while they are more than
// the cache holds, and start is where the block then begins; otherwise
// outgrowing the cache fails it with errOutgrew (and the block and size
// read until then).
func (h *Hub) readRange(from, to Position, newest bool) (block []*entry, start Position, size int64, err error) {
	read := map[int32]int64{}
	for p, o := range from {
		if o < to[p] {
			read[p] = o
		}
	}
	start = from.clone()
	if len(read) == 0 {
		return nil, start, 0, nil
	}
	cl, err := h.cluster.NewPartitionReader(h.topic, read, 100*time.Millisecond)
	if err != nil {
		return nil, nil, 0, err
	}
	defer cl.Close()
	pos, left, over := from.clone(), len(read), false
	for left > 0 && !over {
		ctx, cancel := context.WithTimeout(h.ctx, backfillStall)
		fs := cl.PollFetches(ctx)
		cancel()
		if h.ctx.Err() != nil {
			return nil, nil, 0, h.ctx.Err()
		}
		if ctx.Err() != nil && fs.NumRecords() == 0 {
			return nil, nil, 0, fmt.Errorf("no record came for %s", backfillStall)
		}
		fs.EachRecord(func(r *kgo.Record) {
			p := r.Partition
			end, want := to[p]
			if over || !want || r.Offset < pos[p] || pos[p] >= end {
				return
			}
			if r.Offset >= end {
				pos[p] = end
				left--
				return
			}
			pos[p] = r.Offset + 1
			if pos[p] == end {
				left--
			}
			e := newEntry(r, h.field, h.prefix, pos)
			block = append(block, e)
			size += e.size
			for size > h.maxBytes && len(block) > 1 {
				if !newest {
					over = true
					return
				}
				old := block[0]
				block[0] = nil
				block = block[1:]
				size -= old.size
				start[old.part] = old.off + 1
			}
		})
	}
	if over {
		return block, nil, size, errOutgrew
	}
	return block, start, size, nil
}

// prepend puts block, which ends at to, before the cache, when the cache
// still begins at to (it dropped nothing meanwhile). h.mu is held.
func (h *Hub) prepend(block []*entry, start, to Position, size int64) {
	for p, o := range to {
		if h.floor[p] != o {
			h.logger.Debug("a fetched topic's cache moved while it was backfilled: dropping the backfill", "topic", h.topic)
			return
		}
	}
	h.ents = append(block, h.ents...)
	h.base -= int64(len(block))
	h.bytes += size
	for p := range to {
		h.floor[p] = start[p]
	}
	h.evict()
	h.notify()
}
