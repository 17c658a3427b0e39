package backend

import (
	"sort"
	"sync"
)

// partition tracks, for one assigned partition, which records are finished
// so the committed offset only ever moves past finished records: the
// committed offset is the first record not yet finished. A call holds back
// the commit of later records, not their execution.
//
// A partition belongs to one assignment: when the partition is revoked, its
// tracker is retired and a later assignment of the same partition gets a new
// one, so a call of the old assignment that finishes late changes nothing.
type partition struct {
	topic string
	id    int32

	mu sync.Mutex
	// offsets are the tracked record offsets in order; done[i] tells
	// whether offsets[i] is finished. Finished records at the front are
	// dropped as the commit point moves past them.
	offsets []int64
	done    []bool
	// next is the offset after the last record dropped from the front: the
	// commit point when nothing is tracked.
	next      int64
	committed int64 // the last committed offset, -1 before the first commit
	retired   bool
	// active counts the calls of this partition that have not finished,
	// and final replies that Kafka has not acknowledged yet.
	active int
}

func newPartition(topic string, id int32) *partition {
	return &partition{topic: topic, id: id, next: -1, committed: -1}
}

// track adds a record read from Kafka. It returns false when the partition
// was retired and the record must be ignored.
func (p *partition) track(offset int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return false
	}
	if len(p.offsets) > 0 && offset <= p.offsets[len(p.offsets)-1] {
		// Already tracked: a re-fetch after a reset. Keep the first.
		return false
	}
	if len(p.offsets) == 0 && p.next >= 0 && offset < p.next {
		return false
	}
	p.offsets = append(p.offsets, offset)
	p.done = append(p.done, false)
	return true
}

// finish marks offsets finished and moves the commit point over the
// finished prefix.
func (p *partition) finish(offsets ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return
	}
	for _, o := range offsets {
		i := sort.Search(len(p.offsets), func(i int) bool { return p.offsets[i] >= o })
		if i < len(p.offsets) && p.offsets[i] == o {
			p.done[i] = true
		}
	}
	n := 0
	for n < len(p.done) && p.done[n] {
		n++
	}
	if n > 0 {
		p.next = p.offsets[n-1] + 1
		p.offsets = append(p.offsets[:0], p.offsets[n:]...)
		p.done = append(p.done[:0], p.done[n:]...)
	}
}

// commitPoint returns the offset to commit and whether it moved since the
// last commit.
func (p *partition) commitPoint() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired || p.next < 0 {
		return 0, false
	}
	at := p.next
	if len(p.offsets) > 0 {
		at = p.offsets[0]
	}
	return at, at > p.committed
}

// committedAt records a successful commit.
func (p *partition) committedAt(o int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o > p.committed {
		p.committed = o
	}
}

// addActive counts a call opened on the partition; it returns false on a
// retired partition.
func (p *partition) addActive(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired && n > 0 {
		return false
	}
	p.active += n
	return true
}

func (p *partition) activeCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active
}

// isRetired reports whether the partition's assignment ended.
func (p *partition) isRetired() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.retired
}

// retire ends the partition's assignment: nothing it tracks changes after.
func (p *partition) retire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = true
}
