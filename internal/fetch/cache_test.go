package fetch

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// cachedHub returns a hub whose cache holds records of two partitions,
// interleaved as p0 p0 p1 p0 p1 p1 ..., from offset 10 of each.
func cachedHub(t *testing.T, n int, maxBytes int64) *Hub {
	t.Helper()
	h := &Hub{field: 32767, counts: &counts{}, maxBytes: maxBytes,
		window: window{grew: make(chan struct{}), next: Position{0: 10, 1: 10}, floor: Position{0: 10, 1: 10}, born: Position{}}}
	for i := 0; i < n; i++ {
		p := int32(0)
		if i%3 != 0 && i%2 == 0 || i%5 == 4 {
			p = 1
		}
		h.add(&kgo.Record{Partition: p, Offset: h.next[p], Value: []byte(fmt.Sprintf("p%d-%d", p, h.next[p]))})
	}
	h.evict()
	return h
}

// drain passes every entry of the cache from c's place, returning the
// values and message ids sent.
func drain(t *testing.T, h *Hub, c *cursor) (vals []string, ids []Position) {
	t.Helper()
	for _, e := range h.ents[c.seq-h.base:] {
		if e = c.pass(e, h.field); e == nil {
			continue
		}
		raw, err := entryID(e)
		if err != nil {
			t.Fatal(err)
		}
		id, err := parseID(raw)
		if err != nil {
			t.Fatal(err)
		}
		vals, ids = append(vals, string(e.frame[:e.vlen])), append(ids, id)
	}
	return vals, ids
}

// TestCursorJoinAnyPosition: a cursor joining at any position the cache
// covers gets each record past it once, in order, with the message ids a
// reader of its own would give; past its last record before the position,
// it shares the hub's frames.
func TestCursorJoinAnyPosition(t *testing.T) {
	h := cachedHub(t, 40, 1<<20)
	for p0 := h.floor[0]; p0 <= h.next[0]; p0++ {
		for p1 := h.floor[1]; p1 <= h.next[1]; p1++ {
			pos := Position{0: p0, 1: p1}
			c := &cursor{s: &subscriber{}}
			if joined, ahead := h.join(c, pos); !joined || ahead {
				t.Fatalf("join at %v: joined %v, ahead %v", pos, joined, ahead)
			}
			vals, ids := drain(t, h, c)
			// What a reader of its own from pos gives.
			want, wantIDs := []string(nil), []Position(nil)
			at := pos.clone()
			for _, e := range h.ents {
				if e.off < at[e.part] {
					continue
				}
				at[e.part] = e.off + 1
				want, wantIDs = append(want, string(e.frame[:e.vlen])), append(wantIDs, at.clone())
			}
			if !reflect.DeepEqual(vals, want) || !reflect.DeepEqual(ids, wantIDs) {
				t.Fatalf("from %v: got %v %v, want %v %v", pos, vals, ids, want, wantIDs)
			}
			if got, err := c.position(); err != nil || !reflect.DeepEqual(got, h.next) {
				t.Fatalf("from %v: position %v (%v) after the cache, want %v", pos, got, err, h.next)
			}
			c.leave()
		}
	}
	if h.subscribers() != 0 {
		t.Errorf("%d subscribers after every cursor left", h.subscribers())
	}
	c := &cursor{s: &subscriber{}}
	if joined, ahead := h.join(c, Position{0: h.next[0] + 1, 1: h.floor[1]}); joined || !ahead {
		t.Errorf("a position past the hub: joined %v, ahead %v", joined, ahead)
	}
	if joined, _ := h.join(c, Position{0: h.floor[0] - 1, 1: h.floor[1]}); joined {
		t.Errorf("a position before the cache joined")
	}
}

// TestCacheEvictsToBudget: the cache drops its oldest entries to stay
// within its bytes, raising the floor past each, so the floor stays the
// position before its first entry; a cursor whose place is gone is told.
func TestCacheEvictsToBudget(t *testing.T) {
	h := cachedHub(t, 200, 4096)
	if h.bytes > 4096 || len(h.ents) == 0 || h.counts.evicted.Load() == 0 {
		t.Fatalf("%d entries of %d bytes, %d evicted", len(h.ents), h.bytes, h.counts.evicted.Load())
	}
	first := h.ents[0]
	raw, _ := entryID(first)
	after, _ := parseID(raw)
	before := after.clone()
	before[first.part] = first.off
	if !reflect.DeepEqual(before, h.floor) {
		t.Errorf("floor %v, want the position before the first entry %v", h.floor, before)
	}
	c := &cursor{s: &subscriber{}, seq: h.base - 1}
	if _, err := h.read(t.Context(), c, make([]*entry, 8)); err != errBehind {
		t.Errorf("a cursor before the cache: %v, want errBehind", err)
	}
}

// TestFits: the records before the cache fit when their estimated size
// fits beside what the cache holds, and never at or before a position
// whose backfill outgrew it.
func TestFits(t *testing.T) {
	h := cachedHub(t, 100, 1<<20)
	h.floor = Position{0: 1000, 1: 1000}
	avg := h.bytes / int64(len(h.ents))
	room := (h.maxBytes - h.bytes) / avg
	if !h.fits(Position{0: 1000 - room/2 + 1, 1: 1000 - room/2 + 1}) {
		t.Errorf("%d records of %d bytes do not fit in %d bytes of room", room, avg, h.maxBytes-h.bytes)
	}
	if h.fits(Position{0: 1000 - room, 1: 1000 - room}) {
		t.Errorf("%d records of %d bytes fit in %d bytes of room", 2*room, avg, h.maxBytes-h.bytes)
	}
	h.outgrew = Position{0: 990, 1: 990}
	if h.fits(Position{0: 980, 1: 995}) == false || h.fits(Position{0: 980, 1: 985}) {
		t.Errorf("fits ignores the backfill that outgrew the cache from %v", h.outgrew)
	}
}
