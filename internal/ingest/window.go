package ingest

import (
	"context"
	"sync"
)

// window tracks the records of one call between Ferry reading them and
// Kafka acknowledging them. It bounds how many may be out at once (past
// it, reading stops and gRPC's flow control holds the server back), and it
// knows the cursor up to which every record was acknowledged: where the
// call can be opened again without a gap.
//
// A slot is taken before a response is read and given back only when its
// record and every record read before it are acknowledged, so the records
// read and not yet safe never exceed the window, and their entries fit in a
// ring of the window's size.
type window struct {
	slots chan struct{}

	mu sync.Mutex
	// ring holds the records not yet safe: the one numbered n (counted
	// from 0 in reading order) at n % len(ring), from head to tail.
	ring       []pending
	head, tail uint64
	// safe is the cursor of the last record that every record before it
	// was acknowledged with; safeSeq its sequence number.
	safe    []byte
	safeSeq int64
	// failed is Kafka's error for the first record it refused; fail is
	// closed with it.
	failed error
	fail   chan struct{}
	// out counts the records produced whose promise has not run; idle is
	// signalled when it drops to 0.
	out  int
	idle *sync.Cond
}

type pending struct {
	cursor []byte
	seq    int64
	done   bool
}

func newWindow(size int, safe []byte, safeSeq int64) *window {
	w := &window{slots: make(chan struct{}, size), ring: make([]pending, size), safe: safe, safeSeq: safeSeq, fail: make(chan struct{})}
	w.idle = sync.NewCond(&w.mu)
	return w
}

// acquire waits for room for one more record. It fails when ctx ends or
// Kafka refused a record.
func (w *window) acquire(ctx context.Context) error {
	select {
	case w.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case w.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-w.fail:
		return w.failed
	}
}

// unused gives back a slot taken for a record that was never produced.
func (w *window) unused() { <-w.slots }

// add records that the record with cursor and seq is being produced, and
// returns its number, which done takes with Kafka's answer.
func (w *window) add(cursor []byte, seq int64) uint64 {
	w.mu.Lock()
	n := w.tail
	w.ring[n%uint64(len(w.ring))] = pending{cursor: cursor, seq: seq}
	w.tail++
	w.out++
	w.mu.Unlock()
	return n
}

// done takes Kafka's answer for record n.
func (w *window) done(n uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out--; w.out == 0 {
		w.idle.Broadcast()
	}
	if err != nil {
		if w.failed == nil {
			w.failed = err
			close(w.fail)
		}
		return
	}
	size := uint64(len(w.ring))
	w.ring[n%size].done = true
	for w.head < w.tail && w.ring[w.head%size].done {
		p := &w.ring[w.head%size]
		w.safe, w.safeSeq = p.cursor, p.seq
		*p = pending{}
		w.head++
		<-w.slots
	}
}

// position returns the safe cursor and its sequence number now.
func (w *window) position() ([]byte, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.safe, w.safeSeq
}

// wait waits until Kafka answered for every record produced, and returns
// the safe position and the error of the first record it refused.
func (w *window) wait() ([]byte, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.out > 0 {
		w.idle.Wait()
	}
	return w.safe, w.safeSeq, w.failed
}
