package backend

import (
	"sync"
	"sync/atomic"

	"github.com/ferryproxy/ferry/internal/offsets"
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
	// pending holds the tracked records not yet finished.
	pending offsets.Pending
	// first is the first offset tracked, -1 before it: the partition has
	// nothing to commit until a record finished from there on.
	first int64
	// high is the highest offset ever tracked, -1 before the first: a
	// record at or below it is one read again after a reset.
	high      int64
	committed int64 // the last committed offset, -1 before the first commit
	retired   bool
	// active counts the calls of this partition that have not finished,
	// and final replies that Kafka has not acknowledged yet.
	active int

	// highWatermark is the partition's high watermark at the last fetch
	// that returned it, -1 before.
	highWatermark atomic.Int64
}

func newPartition(topic string, id int32) *partition {
	p := &partition{topic: topic, id: id, first: -1, high: -1, committed: -1}
	p.highWatermark.Store(-1)
	return p
}

// lag returns how many records up to the high watermark are not finished,
// false until a fetch returned records of the partition.
func (p *partition) lag() (int64, bool) {
	hw := p.highWatermark.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	if hw < 0 || p.high < 0 {
		return 0, false
	}
	return p.pending.Lag(hw, p.high+1), true
}

// track adds a record read from Kafka. It returns false when the partition
// was retired and the record must be ignored.
func (p *partition) track(offset int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return false
	}
	if offset <= p.high {
		// Already tracked: a re-fetch after a reset. Keep the first.
		return false
	}
	if p.first < 0 {
		p.first = offset
	}
	p.high = offset
	p.pending.Add(offset)
	return true
}

// finish marks offsets finished, which moves the commit point over the
// finished prefix.
func (p *partition) finish(offsets ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired {
		return
	}
	for _, o := range offsets {
		p.pending.Finish(o)
	}
}

// commitPoint returns the offset to commit and whether it moved since the
// last commit.
func (p *partition) commitPoint() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retired || p.high < 0 {
		return 0, false
	}
	at := p.pending.CommitPoint(p.high + 1)
	if at == p.first {
		return 0, false // nothing finished yet
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
