package kafkaapi

import "slices"

// pending is the ascending set of a partition's offsets that were read and
// are not yet settled. Offsets are added in ascending order as records are
// read and removed in any order as they are acknowledged; a removal only
// marks its entry, settled entries at the front are skipped, and the slice
// is compacted once they are the majority, so both are cheap at any depth.
type pending struct {
	offs    []int64
	settled []bool
	head    int // entries before head are settled
	live    int
}

// add appends off, which must be above every offset added before.
func (p *pending) add(off int64) {
	p.offs = append(p.offs, off)
	p.settled = append(p.settled, false)
	p.live++
}

// find returns the index of off among the unsettled entries, or -1.
func (p *pending) find(off int64) int {
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
	if p.settled[p.head+i] {
		return -1
	}
	return p.head + i
}

func (p *pending) contains(off int64) bool { return p.find(off) >= 0 }

// remove settles off; it reports whether off was unsettled.
func (p *pending) remove(off int64) bool {
	i := p.find(off)
	if i < 0 {
		return false
	}
	p.settled[i] = true
	p.live--
	for p.head < len(p.offs) && p.settled[p.head] {
		p.head++
	}
	if n := len(p.offs) - p.head; p.head > 0 && (n == 0 || (p.head >= 1024 && p.head > n)) {
		p.compact()
	} else if n >= 1024 && p.live < n/2 {
		p.compact()
	}
	return true
}

func (p *pending) compact() {
	j := 0
	for i := p.head; i < len(p.offs); i++ {
		if !p.settled[i] {
			p.offs[j], p.settled[j] = p.offs[i], false
			j++
		}
	}
	clear(p.settled[j:])
	p.offs, p.settled, p.head = p.offs[:j], p.settled[:j], 0
}

// first returns the lowest unsettled offset.
func (p *pending) first() (int64, bool) {
	if p.live == 0 {
		return 0, false
	}
	return p.offs[p.head], true
}

func (p *pending) len() int { return p.live }

// each calls fn with every unsettled offset, ascending.
func (p *pending) each(fn func(off int64)) {
	for i := p.head; i < len(p.offs); i++ {
		if !p.settled[i] {
			fn(p.offs[i])
		}
	}
}

func (p *pending) reset() { *p = pending{} }
