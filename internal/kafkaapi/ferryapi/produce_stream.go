package ferryapi

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

// ProduceStream writes every record of the stream and answers each with a
// ProduceResult, in the order the records came.
//
// Two goroutines share a results ring. The handler's goroutine reads a
// record, takes the next sequence number and hands the record to
// ProduceAsync; franz-go's callback fills the record's slot. The sender
// goroutine sends the completed results from the head of the ring in
// order, so a callback never waits on the network. The ring holds
// cfg.Produce.MaxInFlightPerStream slots: while they are all taken (records
// written but not yet answered) the handler stops reading, which pushes back
// on the client through gRPC flow control.
func (s *Server) ProduceStream(stream grpc.BidiStreamingServer[kafkav1.ProduceStreamRequest, kafkav1.ProduceStreamResponse]) error {
	ctx := stream.Context()
	size := s.svc.Config().Produce.MaxInFlightPerStream
	if size <= 0 {
		size = defaultMaxInFlight
	}
	q := newResultQueue(size)
	sent := make(chan error, 1)
	go func() { sent <- q.drain(stream) }()

	if err := s.produceRecords(ctx, stream, q); err != nil {
		// The sender stops at its next look at the ring. It is waited for
		// because grpc-go forbids a Send after the handler returned; one
		// blocked by a client that reads no more ends when the client
		// goes away.
		q.abort(err)
		<-sent
		return err
	}
	// The client half-closed: the sender finishes once every record was
	// answered.
	q.finish()
	return <-sent
}

// produceRecords reads requests until the client half-closes (nil) or the
// stream fails, and writes their records.
func (s *Server) produceRecords(ctx context.Context, stream grpc.BidiStreamingServer[kafkav1.ProduceStreamRequest, kafkav1.ProduceStreamResponse], q *resultQueue) error {
	req := new(kafkav1.ProduceStreamRequest)
	for {
		// RecvMsg into one reused request: unmarshalling resets it and
		// allocates fresh bytes, so records handed on keep their own.
		if err := stream.RecvMsg(req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// Sequence numbers [next, end) are reserved for the records to
		// come; a reservation never exceeds the records left, since every
		// reserved slot must be completed for the sender to go on.
		recs := req.GetRecords()
		var next, end int64
		for i, r := range recs {
			// After a failure (the sender could not send), reserve
			// returns it: the records left are not written.
			if next == end || q.failed.Load() {
				var err error
				if next, end, err = q.reserve(ctx, len(recs)-i); err != nil {
					return err
				}
			}
			seq := next
			next++
			rec, err := toRecord(r)
			if err == nil && r.GetAsync() {
				err = invalid("async", "is not supported on ProduceStream, which answers every record on its own")
			}
			if err == nil {
				err = s.svc.ProduceAsync(ctx, r.GetCluster(), r.GetTopic(), rec, func(res kafkaapi.Result, err error) {
					q.complete(seq, res, err)
				})
			}
			if err != nil {
				q.complete(seq, kafkaapi.Result{}, err)
			}
		}
	}
}

// resultSlot is one record's place in the ring.
type resultSlot struct {
	done      bool
	partition int32
	offset    int64
	code      codes.Code
	msg       string
}

// resultQueue is the ring of a ProduceStream's results, in sequence order.
type resultQueue struct {
	mu       sync.Mutex
	slots    []resultSlot
	head     int64       // the next sequence to send
	tail     int64       // the sequence the next record gets
	finished bool        // no more records come
	err      error       // the stream failed: stop
	failed   atomic.Bool // err is set; read by the reader without the lock

	ready chan struct{} // the head slot completed, or finished/err was set
	space chan struct{} // the sender freed slots
}

func newResultQueue(size int) *resultQueue {
	return &resultQueue{
		slots: make([]resultSlot, size),
		ready: make(chan struct{}, 1),
		space: make(chan struct{}, 1),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// reserve waits until a slot is free, then takes the sequence numbers
// [first, end) for the next records: as many as want, or as slots are free.
// Only the reader calls it, so a batch of records costs one lock, not one
// per record.
func (q *resultQueue) reserve(ctx context.Context, want int) (first, end int64, err error) {
	for {
		q.mu.Lock()
		free := int64(len(q.slots)) - (q.tail - q.head)
		if q.err == nil && free > 0 {
			first = q.tail
			q.tail += min(free, int64(want))
			for seq := first; seq < q.tail; seq++ {
				q.slots[seq%int64(len(q.slots))] = resultSlot{}
			}
			end = q.tail
		}
		err = q.err
		q.mu.Unlock()
		if err != nil {
			return 0, 0, err
		}
		if end > first {
			return first, end, nil
		}
		select {
		case <-q.space:
		case <-ctx.Done():
			return 0, 0, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// complete records a record's result; it never blocks, as franz-go's
// callbacks must not.
func (q *resultQueue) complete(seq int64, r kafkaapi.Result, err error) {
	slot := resultSlot{done: true, partition: r.Partition, offset: r.Offset}
	if err != nil {
		st := status.Convert(err)
		slot = resultSlot{done: true, partition: -1, offset: -1, code: st.Code(), msg: st.Message()}
	}
	q.mu.Lock()
	q.slots[seq%int64(len(q.slots))] = slot
	wake := seq == q.head
	q.mu.Unlock()
	if wake {
		signal(q.ready)
	}
}

// finish tells the sender that no more records come.
func (q *resultQueue) finish() {
	q.mu.Lock()
	q.finished = true
	q.mu.Unlock()
	signal(q.ready)
}

// abort stops the sender (and a waiting reader) with err.
func (q *resultQueue) abort(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
		q.failed.Store(true)
	}
	q.mu.Unlock()
	signal(q.ready)
	signal(q.space)
}

// drain sends results in sequence order as they complete, until finish
// was called and every result was sent (nil), or the stream failed.
func (q *resultQueue) drain(stream grpc.BidiStreamingServer[kafkav1.ProduceStreamRequest, kafkav1.ProduceStreamResponse]) error {
	batch := make([]resultSlot, 0, min(len(q.slots), 1024))
	// Send marshals at once, so one response and its results are reused.
	out := new(kafkav1.ProduceStreamResponse)
	results := make([]kafkav1.ProduceResult, cap(batch))
	for {
		q.mu.Lock()
		first := q.head
		for q.head < q.tail && len(batch) < cap(batch) {
			slot := &q.slots[q.head%int64(len(q.slots))]
			if !slot.done {
				break
			}
			batch = append(batch, *slot)
			q.head++
		}
		err, done := q.err, q.finished && q.head == q.tail
		q.mu.Unlock()
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			if done {
				return nil
			}
			<-q.ready
			continue
		}
		signal(q.space)
		out.Results = out.Results[:0]
		for i, r := range batch {
			res := &results[i]
			res.Sequence = first + int64(i)
			res.Partition, res.Offset, res.Code, res.Error = r.partition, r.offset, int32(r.code), r.msg
			out.Results = append(out.Results, res)
		}
		if err := stream.Send(out); err != nil {
			q.abort(err)
			return err
		}
		batch = batch[:0]
	}
}
