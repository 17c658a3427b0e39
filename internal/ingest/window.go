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
// read and not yet safe never exceed the window.
type window struct {
	slots chan struct{}

	mu sync.Mutex
	// queue are the records not yet safe, in reading order, from head on.
	queue []*pending
	head  int
	// safe is the cursor of the last record that every record before it
	// was acknowledged with; safeSeq its sequence number.
	safe    []byte
	safeSeq int64
	// failed is Kafka's error for the first record it refused; fail is
	// closed with it.
	failed error
	fail   chan struct{}
	// out counts the records produced whose promise has not run.
	out sync.WaitGroup
}

type pending struct {
	cursor []byte
	seq    int64
	done   bool
}

func newWindow(size int, safe []byte, safeSeq int64) *window {
	return &window{slots: make(chan struct{}, size), safe: safe, safeSeq: safeSeq, fail: make(chan struct{})}
}

// acquire waits for room for one more record. It fails when ctx ends or
// Kafka refused a record.
func (w *window) acquire(ctx context.Context) error {
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
// returns what its promise calls with Kafka's answer.
func (w *window) add(cursor []byte, seq int64) func(error) {
	p := &pending{cursor: cursor, seq: seq}
	w.mu.Lock()
	w.queue = append(w.queue, p)
	w.mu.Unlock()
	w.out.Add(1)
	return func(err error) {
		defer w.out.Done()
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.failed == nil {
				w.failed = err
				close(w.fail)
			}
			return
		}
		p.done = true
		for w.head < len(w.queue) && w.queue[w.head].done {
			q := w.queue[w.head]
			w.queue[w.head] = nil
			w.head++
			w.safe, w.safeSeq = q.cursor, q.seq
			<-w.slots
		}
		if w.head == len(w.queue) {
			w.queue, w.head = w.queue[:0], 0
		} else if w.head > 1024 && w.head > len(w.queue)/2 {
			w.queue = append(w.queue[:0], w.queue[w.head:]...)
			w.head = 0
		}
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
	w.out.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.safe, w.safeSeq, w.failed
}
