// Package offsets tracks the offsets of one Kafka partition that were read
// and not yet finished, so that a consumer commits only past finished
// records: offsets are read in ascending order, finished in any order, and
// the commit point is the first unfinished one.
//
// The back end's request consumer and the Kafka API's consumer groups both
// keep one Pending per assigned partition.
package offsets

import "slices"

// Pending is the ascending set of a partition's offsets that were read and
// are not yet finished. Offsets are added in ascending order as records are
// read and finished in any order; a finish only marks its entry, finished
// entries at the front are skipped, and the slice is compacted once they
// are the majority, so adding and finishing stay cheap at any depth.
//
// The zero value is an empty set. A Pending is not safe for concurrent use.
type Pending struct {
	offs []int64
	done []bool
	head int // entries before head are finished
	live int // unfinished entries
}

// compactAt is the number of finished entries from which Pending compacts
// its slices: below it, keeping them costs less than moving the others.
const compactAt = 1024

// Add appends off, which must be above every offset added before.
func (p *Pending) Add(off int64) {
	p.offs = append(p.offs, off)
	p.done = append(p.done, false)
	p.live++
}

// find returns the index of off among the unfinished entries, or -1.
func (p *Pending) find(off int64) int {
	live := p.offs[p.head:]
	if len(live) == 0 {
		return -1
	}
	// A partition's offsets are mostly consecutive (gaps come from
	// compaction and transactions), so off is usually at off - live[0].
	i, ok := int(off-live[0]), false
	if off < live[0] || i >= len(live) || live[i] != off {
		i, ok = slices.BinarySearch(live, off)
		if !ok {
			return -1
		}
	}
	if p.done[p.head+i] {
		return -1
	}
	return p.head + i
}

// Contains reports whether off was added and is not finished.
func (p *Pending) Contains(off int64) bool { return p.find(off) >= 0 }

// Finish marks off finished; it reports whether off was unfinished.
func (p *Pending) Finish(off int64) bool {
	i := p.find(off)
	if i < 0 {
		return false
	}
	p.done[i] = true
	p.live--
	for p.head < len(p.offs) && p.done[p.head] {
		p.head++
	}
	if n := len(p.offs) - p.head; p.head > 0 && (n == 0 || (p.head >= compactAt && p.head > n)) {
		p.compact()
	} else if n >= compactAt && p.live < n/2 {
		p.compact()
	}
	return true
}

// compact drops every finished entry.
func (p *Pending) compact() {
	j := 0
	for i := p.head; i < len(p.offs); i++ {
		if !p.done[i] {
			p.offs[j], p.done[j] = p.offs[i], false
			j++
		}
	}
	clear(p.done[j:])
	p.offs, p.done, p.head = p.offs[:j], p.done[:j], 0
}

// First returns the lowest unfinished offset; ok is false when none is.
func (p *Pending) First() (off int64, ok bool) {
	if p.live == 0 {
		return 0, false
	}
	return p.offs[p.head], true
}

// CommitPoint returns the offset a commit writes: the lowest unfinished
// offset, or end, the offset after the last one read, when every offset
// read is finished.
func (p *Pending) CommitPoint(end int64) int64 {
	if off, ok := p.First(); ok {
		return off
	}
	return end
}

// Lag returns how many records of a partition whose high watermark (the
// offset after its last record) is highWatermark a commit would leave
// unfinished: highWatermark less CommitPoint(end), never below 0.
func (p *Pending) Lag(highWatermark, end int64) int64 {
	return max(highWatermark-p.CommitPoint(end), 0)
}

// Len returns how many offsets are unfinished.
func (p *Pending) Len() int { return p.live }

// Each calls fn with every unfinished offset, ascending.
func (p *Pending) Each(fn func(off int64)) {
	for i := p.head; i < len(p.offs); i++ {
		if !p.done[i] {
			fn(p.offs[i])
		}
	}
}

// Reset empties the set.
func (p *Pending) Reset() { *p = Pending{} }
