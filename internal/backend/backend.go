// Package backend is Ferry's Kafka → gRPC capability: it reads request
// records from a topic in a consumer group, calls a real gRPC server with
// them, and writes the server's responses and final status to each
// request's reply topic, in the record layout Zilla's kafka-grpc binding
// uses. A request's offset is committed only after its final reply record
// was acknowledged by Kafka, so a crash loses nothing: the partition's next
// owner redoes what was not committed (at least once).
package backend

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/valueformat"
)

// Options configure a Backend.
type Options struct {
	Config config.Backend
	// Cluster is the back end's cluster: Start takes from it the producer
	// of replies (acks from all in-sync replicas) and creates the group
	// consumer of requests.
	Cluster *kafka.Cluster
	Logger  *slog.Logger
	// MaxMessageBytes bounds a response message from the server (Ferry's
	// one message size limit, listeners.grpc.max_recv_message_size): each
	// becomes a reply record, which the producer would refuse past it.
	// Zero leaves grpc-go's default.
	MaxMessageBytes int
	// DialOptions are added to the gRPC client's own, after them: the
	// edge chain's client interceptors.
	DialOptions []grpc.DialOption
	// Registry holds the methods whose messages a back end with format
	// json converts; SetRegistry replaces it. Unused with format protobuf.
	Registry *protoreg.Registry
	// TracerProvider, when set, traces every call: a consumer span that
	// continues the trace its request record carries (see
	// layout.RequestTrace), around the call to the server, and reply
	// records that carry the span's trace context. Nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Backend serves one configured back end: New, then Start; Close stops it.
type Backend struct {
	cfg     config.Backend
	layout  layout.Layout
	cluster *kafka.Cluster
	cons    *kgo.Client
	prod    *kgo.Client
	conn    *grpc.ClientConn
	// metadata is the static metadata of every call, by key.
	metadata map[string]string
	// tlsLog knows why the last TLS connection to the server failed; nil
	// without TLS.
	tlsLog *ConnLog
	logger *slog.Logger
	slots  chan struct{}
	tracer trace.TracerProvider // nil: calls are not traced
	// format converts request and reply values from and to JSON, with
	// the method descriptors of reg; nil when the back end's format is
	// protobuf, whose values pass as they are.
	format *valueformat.Format
	reg    atomic.Pointer[protoreg.Registry]

	// ctx ends every call; cancel is called by Close after draining.
	ctx    context.Context
	cancel context.CancelFunc
	calls  sync.WaitGroup // every call goroutine
	loops  sync.WaitGroup // the poll loop and the committer
	// stopPoll ends the poll loop without ending calls.
	stopPoll context.CancelFunc
	pollCtx  context.Context
	// givenUp ends when Close stops waiting: the revoke hook then stops
	// draining calls and cancels its commit.
	givenUp context.Context
	giveUp  context.CancelFunc

	closeOnce sync.Once
	closeErr  error

	// mu guards the maps below and paused.
	mu    sync.Mutex
	parts map[int32]*partition
	open  map[string]*call // by correlation id
	// endedEarly holds the ids of calls that ended before their request
	// stream did (a client stream the server answered early, a call past
	// its deadline, a request rejected): the stream's later records are
	// skipped, and its null record removes the id. Nothing else is kept
	// about calls that ended, so a request written again with the same
	// correlation id (a retry) is executed again, and so are the records
	// of an abandoned call read again after its partition came back.
	endedEarly *idSet
	waiting    int // calls read but waiting for a slot
	// incomplete counts open calls whose request stream has not ended.
	incomplete int
	stats      Stats
	retries    atomic.Int64
	// room is signalled when a waiting call gets a slot.
	room chan struct{}
}

// Stats describe a back end's flow control, for tests and metrics.
type Stats struct {
	// Pauses counts how often reading paused because too many calls
	// waited for a slot.
	Pauses int
	// PeakWaiting is the most calls that waited for a slot at once.
	PeakWaiting int
	// Open is how many calls were read and have not finished, Waiting
	// how many of them wait for a slot.
	Open, Waiting int
	// Partitions is how many partitions of the request topic the back
	// end owns.
	Partitions int
	// Assignments counts the group's assignments to the back end, with
	// partitions or none: the first as it joined, then one per rebalance.
	Assignments int
	// Revokes counts the rebalances that took partitions away, Losses
	// the times partitions were lost (the session expired, or the group
	// was left uncleanly), when their offsets could not be committed.
	Revokes, Losses int
	// Lag is, by owned partition, how many records of the request topic
	// the back end has not finished: the partition's high watermark at
	// the last fetch less the offset it commits next. A partition appears
	// once a fetch returned records of it.
	Lag map[int32]int64
	// Retries counts the attempts repeated because the server was
	// UNAVAILABLE.
	Retries int64
}

// Stats returns the back end's flow-control counters and lag.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	st := b.stats
	st.Open, st.Waiting, st.Partitions = len(b.open), b.waiting, len(b.parts)
	st.Retries = b.retries.Load()
	ps := make([]*partition, 0, len(b.parts))
	for _, p := range b.parts {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	st.Lag = make(map[int32]int64, len(ps))
	for _, p := range ps {
		if lag, ok := p.lag(); ok {
			st.Lag[p.id] = lag
		}
	}
	return st
}

// consumerOpts are the kgo options the back end's consumer is created
// with: manual commits, and the group hooks through which the back end
// learns of its partitions. Assignments can arrive as soon as the consumer
// exists.
func (b *Backend) consumerOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			b.assigned(m)
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
			b.revoked(ctx, m, true)
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
			b.revoked(ctx, m, false)
		}),
	}
}

// New prepares a back end: it creates the gRPC client (which connects
// lazily) and nothing else.
func New(opts Options) (*Backend, error) {
	cfg := opts.Config
	callOpts := []grpc.CallOption{grpc.ForceCodecV2(frame.Codec{})}
	if opts.MaxMessageBytes > 0 {
		// A larger response fails the call with RESOURCE_EXHAUSTED, which
		// the caller sees, instead of a reply record the producer refuses
		// while the call ends OK.
		callOpts = append(callOpts, grpc.MaxCallRecvMsgSize(opts.MaxMessageBytes))
	}
	logger := opts.Logger.With("backend", cfg.Name)
	creds, tlsLog, err := TransportCredentials(cfg.TLS, "backends "+cfg.Name+": tls", cfg.Target, logger)
	if err != nil {
		return nil, err
	}
	md, err := cfg.MetadataValues()
	if err != nil {
		return nil, fmt.Errorf("backends %s: %w", cfg.Name, err)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(callOpts...),
		// Reconnect soon after a server comes back: calls are retried
		// with their own backoff, bounded by the call deadline.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.Retry.MaxBackoff},
			MinConnectTimeout: 5 * time.Second,
		}),
	}, opts.DialOptions...)
	conn, err := grpc.NewClient(cfg.Target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("backends %s: creating gRPC client for %q: %w", cfg.Name, cfg.Target, err)
	}
	var format *valueformat.Format
	if cfg.Format == config.FormatJSON {
		if format, err = valueformat.New(cfg.Format, cfg.JSON); err != nil {
			return nil, fmt.Errorf("backends %s: %w", cfg.Name, err)
		}
	}
	b := &Backend{
		format:     format,
		cfg:        cfg,
		layout:     layout.New(cfg.HeaderNames),
		cluster:    opts.Cluster,
		conn:       conn,
		metadata:   md,
		tlsLog:     tlsLog,
		logger:     logger,
		slots:      make(chan struct{}, cfg.Concurrency),
		room:       make(chan struct{}, 1),
		parts:      map[int32]*partition{},
		open:       map[string]*call{},
		endedEarly: newIDSet(100_000),
		tracer:     opts.TracerProvider,
	}
	b.reg.Store(opts.Registry)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.pollCtx, b.stopPoll = context.WithCancel(b.ctx)
	b.givenUp, b.giveUp = context.WithCancel(context.Background())
	return b, nil
}

// SetRegistry makes calls from now on find the methods whose messages
// they convert in reg: a reload that loaded the protos again keeps a back
// end whose configuration did not change, with the new definitions.
func (b *Backend) SetRegistry(reg *protoreg.Registry) { b.reg.Store(reg) }

// Start takes the reply producer, creates the group consumer of the
// request topic and begins reading requests and committing finished ones.
func (b *Backend) Start(context.Context) error {
	cfg := b.cfg
	prod, err := b.cluster.Producer(kafka.AcksInSyncReplicas)
	if err != nil {
		return err
	}
	b.prod = prod
	b.cons, err = b.cluster.NewGroupConsumer(cfg.Topic, cfg.GroupID, cfg.GroupInstanceID, cfg.Start, cfg.SessionTimeout, b.consumerOpts()...)
	if err != nil {
		return err
	}
	b.loops.Add(2)
	go func() {
		defer b.loops.Done()
		b.poll()
	}()
	go func() {
		defer b.loops.Done()
		b.commitLoop()
	}()
	b.logger.Info("serving back end", "topic", cfg.Topic, "group", cfg.GroupID, "target", cfg.Target)
	return nil
}

// Close stops reading, lets running calls finish for up to the drain
// timeout, commits what finished, abandons the rest uncommitted, leaves the
// group and closes the gRPC client. When ctx ends first, it stops waiting
// for calls and for the last commit, and the error counts the calls it
// abandoned: Kafka delivers every request not committed again, to the
// partitions' next owner. Close is safe to call more than once, and after
// a Start that failed or never ran.
func (b *Backend) Close(ctx context.Context) error {
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	return b.closeErr
}

func (b *Backend) close(ctx context.Context) error {
	b.stopPoll()
	b.loops.Wait()
	// Closing the consumer leaves the group, which revokes every partition:
	// the revoke hook drains the calls and commits what finished.
	left := make(chan struct{})
	go func() {
		defer close(left)
		if b.cons != nil {
			b.cons.Close()
		}
	}()
	var err error
	select {
	case <-left:
	case <-ctx.Done():
		b.mu.Lock()
		running := len(b.open)
		b.mu.Unlock()
		err = fmt.Errorf("abandoning %d running calls, whose requests the partitions' next owner runs again unless committed: %w", running, ctx.Err())
		b.giveUp()
		<-left
	}
	// Calls the revoke hook did not reach (a partition lost, a consumer
	// that never joined) are abandoned too: uncommitted, they are redone
	// by the partitions' next owner rather than answered with an error.
	b.mu.Lock()
	for _, c := range b.open {
		c.abandon()
	}
	b.mu.Unlock()
	b.cancel()
	b.calls.Wait()
	b.conn.Close()
	b.giveUp()
	return err
}

// poll reads request records and hands each to its call.
func (b *Backend) poll() {
	for {
		// At most max_pending_calls records a poll, so that waiting calls
		// stay within twice that bound before fetching pauses.
		fs := b.cons.PollRecords(b.pollCtx, b.cfg.MaxPendingCalls)
		if b.pollCtx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			b.logger.Warn("reading requests", append(kafka.FetchErrorAttrs(t, p), "err", err)...)
		})
		b.noteHighWatermarks(fs)
		fs.EachRecord(b.dispatch)
		if !b.waitForRoom() {
			return
		}
	}
}

// noteHighWatermarks keeps, for each owned partition fs read, its high
// watermark, from which Stats tells the lag.
func (b *Backend) noteHighWatermarks(fs kgo.Fetches) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		if p := b.parts[fp.Partition]; p != nil && fp.Err == nil && fp.Topic == b.cfg.Topic {
			p.highWatermark.Store(fp.HighWatermark)
		}
	})
}

// waitForRoom holds the poll loop while max_pending_calls calls wait for a
// slot, until half of them got one. Not polling stops fetching once the
// client's buffer is full, so memory stays bounded; polling at most
// max_pending_calls records at a time keeps the waiting calls within twice
// that bound. It holds only while no open call lacks part of its request
// stream (its next message, its null record): such a call may need the
// next poll to finish, and holding then would leave it, and every call
// waiting behind it, stalled until its deadline. The bound is therefore
// approximate while streaming requests are open. It returns false when the
// back end is closing.
func (b *Backend) waitForRoom() bool {
	b.mu.Lock()
	full := b.full(b.cfg.MaxPendingCalls)
	if full {
		b.stats.Pauses++
		b.logger.Debug("pausing reads: the gRPC server is slower than the requests arrive", "waiting_calls", b.waiting)
	}
	b.mu.Unlock()
	for full {
		select {
		case <-b.room:
		case <-b.pollCtx.Done():
			return false
		}
		b.mu.Lock()
		full = b.full(b.cfg.MaxPendingCalls/2 + 1)
		b.mu.Unlock()
	}
	return true
}

// dispatch routes one request record: it continues the open call of its
// correlation id, opens a new call, or finishes the record at once when it
// is not for this back end.
func (b *Backend) dispatch(r *kgo.Record) {
	b.mu.Lock()
	p := b.parts[r.Partition]
	b.mu.Unlock()
	if p == nil || !p.track(r.Offset) {
		return // the partition was revoked, or the record is already tracked
	}
	req := b.request(r)
	if req.CorrelationID == "" {
		// Not a request of the layout: nothing to answer.
		p.finish(r.Offset)
		return
	}
	b.mu.Lock()
	c := b.open[req.CorrelationID]
	if c != nil && c.part != p && c.part.id == p.id {
		// The call belongs to an earlier assignment of the partition and
		// was abandoned when the partition was taken away: its records,
		// read again now, make a new call.
		c = nil
	}
	if c != nil {
		b.mu.Unlock()
		if !c.add(r) {
			p.finish(r.Offset)
		}
		return
	}
	late := b.endedEarly.has(req.CorrelationID)
	if late && r.Value == nil {
		// The stream of a call that ended early is complete: a record of
		// this id after it starts a new call.
		b.endedEarly.remove(req.CorrelationID)
	}
	b.mu.Unlock()
	switch {
	case late, r.Value == nil:
		// A late record of a call that ended before its request stream,
		// or the end of a request stream whose call is unknown here:
		// nothing to do.
		p.finish(r.Offset)
	case req.Service == "" || req.Method == "":
		b.reject(p, r, req)
	case !b.serves(r, req):
		p.finish(r.Offset)
	default:
		b.openCall(p, r, req)
	}
}

// request reads the layout headers of a request record; one that names no
// reply topic is answered on the back end's reply_to.
func (b *Backend) request(r *kgo.Record) layout.Request {
	req := b.layout.ParseRequest(r.Headers)
	if req.ReplyTo == "" {
		req.ReplyTo = b.cfg.ReplyTo
	}
	return req
}

// serves reports whether the back end's conditions select the request.
func (b *Backend) serves(r *kgo.Record, req layout.Request) bool {
	if len(b.cfg.When) == 0 {
		return true
	}
	for _, w := range b.cfg.When {
		if w.Method != "" {
			svc, m, _ := strings.Cut(w.Method, "/")
			if svc != req.Service || (m != "*" && m != req.Method) {
				continue
			}
		}
		if w.Key != "" && w.Key != string(r.Key) {
			continue
		}
		if !headersMatch(w.Headers, r.Headers) {
			continue
		}
		return true
	}
	return false
}

func headersMatch(want map[string]string, hs []kgo.RecordHeader) bool {
	for k, v := range want {
		found := false
		for _, h := range hs {
			if h.Key == k && string(h.Value) == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// reject answers a request that names no service or method with
// layout.StatusNoMethod, as Zilla does, and finishes it once the answer is
// written.
func (b *Backend) reject(p *partition, r *kgo.Record, req layout.Request) {
	// The rest of the request stream, if any, belongs to this answered
	// request.
	b.mu.Lock()
	b.endedEarly.add(req.CorrelationID)
	b.mu.Unlock()
	if req.ReplyTo == "" {
		b.logger.Warn("skipping a request without service, method or reply topic", "partition", r.Partition, "offset", r.Offset)
		p.finish(r.Offset)
		return
	}
	rec := b.layout.NoMethodRecord(req.ReplyTo, req.CorrelationID)
	b.prod.Produce(b.ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			b.logger.Warn("writing the reply to a request without service or method", "err", err)
		}
		// Even when the answer failed, the request itself is finished:
		// redoing it cannot succeed either.
		p.finish(r.Offset)
	})
}

// openCall starts a call for its first record; the call waits for a slot
// in its own goroutine, so the poll loop keeps feeding open calls.
func (b *Backend) openCall(p *partition, r *kgo.Record, req layout.Request) {
	if !p.addActive(1) {
		return
	}
	c := newCall(b, p, r, req)
	b.mu.Lock()
	b.open[req.CorrelationID] = c
	b.waiting++
	b.incomplete++
	b.stats.PeakWaiting = max(b.stats.PeakWaiting, b.waiting)
	b.mu.Unlock()
	b.calls.Add(1)
	go func() {
		defer b.calls.Done()
		c.run()
	}()
}

// leftQueue notes that a call got a slot, or gave up waiting for one, and
// wakes a poll loop waiting for room.
func (b *Backend) leftQueue() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting--
	select {
	case b.room <- struct{}{}:
	default:
	}
}

// full reports whether reading must wait: at least limit calls wait for a
// slot and none lacks records. Call with mu held.
func (b *Backend) full(limit int) bool {
	return b.waiting >= limit && b.incomplete == 0
}

// requestEnded notes that a call's request stream is complete.
func (b *Backend) requestEnded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.incomplete--
}

// ended removes a finished or abandoned call. A call that finished before
// its request stream ended has its id kept, so the stream's later records
// are skipped; an abandoned call leaves nothing behind, so its records are
// executed again when they are read again.
func (b *Backend) ended(c *call) {
	c.mu.Lock()
	gotEnd := c.gotEnd
	c.gotEnd = true // no requestEnded after this
	abandoned := c.abandoned
	c.mu.Unlock()
	b.mu.Lock()
	if !gotEnd {
		b.incomplete--
		if !abandoned {
			b.endedEarly.add(c.id)
		}
	}
	if b.open[c.id] == c {
		delete(b.open, c.id)
	}
	b.mu.Unlock()
	c.part.addActive(-1)
}

// assigned starts tracking newly assigned partitions.
func (b *Backend) assigned(m map[string][]int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Assignments++
	for _, id := range m[b.cfg.Topic] {
		b.parts[id] = newPartition(b.cfg.Topic, id)
	}
	b.logger.Info("partitions assigned", "topic", b.cfg.Topic, "partitions", m[b.cfg.Topic])
}

// revoked lets the calls of partitions being taken away finish for up to
// the drain timeout, commits what finished (unless the partitions were
// lost, when committing is no longer allowed), and abandons the rest: they
// write nothing more and stay uncommitted, so the next owner redoes them.
func (b *Backend) revoked(ctx context.Context, m map[string][]int32, commit bool) {
	b.mu.Lock()
	var ps []*partition
	for _, id := range m[b.cfg.Topic] {
		if p := b.parts[id]; p != nil {
			ps = append(ps, p)
			delete(b.parts, id)
		}
	}
	if len(m[b.cfg.Topic]) > 0 {
		if commit {
			b.stats.Revokes++
		} else {
			b.stats.Losses++
		}
	}
	b.mu.Unlock()
	if len(ps) == 0 {
		return
	}
	if commit {
		// The group waits for this hook; the client may be closing, so
		// the wait and the commit have their own bound.
		// A Close that stopped waiting ends both.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.DrainTimeout+10*time.Second)
		defer cancel()
		defer context.AfterFunc(b.givenUp, cancel)()
		deadline := time.Now().Add(b.cfg.DrainTimeout)
		for _, p := range ps {
			for p.activeCalls() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		b.commit(ctx, ps)
	}
	for _, p := range ps {
		p.retire()
	}
	b.abandon(ps)
	b.logger.Info("partitions revoked", "topic", b.cfg.Topic, "partitions", m[b.cfg.Topic], "committed", commit)
}

// abandon cancels the open calls of retired partitions.
func (b *Backend) abandon(ps []*partition) {
	gone := map[*partition]bool{}
	for _, p := range ps {
		gone[p] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.open {
		if gone[c.part] {
			c.abandon()
		}
	}
}

// commitLoop commits finished requests every commit interval.
func (b *Backend) commitLoop() {
	t := time.NewTicker(b.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-b.pollCtx.Done():
			return
		case <-t.C:
			b.mu.Lock()
			ps := make([]*partition, 0, len(b.parts))
			for _, p := range b.parts {
				ps = append(ps, p)
			}
			b.mu.Unlock()
			b.commit(b.pollCtx, ps)
		}
	}
}

// commit commits the finished prefix of each partition that moved.
func (b *Backend) commit(ctx context.Context, ps []*partition) {
	offsets := map[int32]kgo.EpochOffset{}
	for _, p := range ps {
		if at, moved := p.commitPoint(); moved {
			offsets[p.id] = kgo.EpochOffset{Epoch: -1, Offset: at}
		}
	}
	if len(offsets) == 0 {
		return
	}
	var failed error
	b.cons.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{b.cfg.Topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				failed = err
				return
			}
			for _, t := range resp.Topics {
				for _, pr := range t.Partitions {
					if e := kerr.ErrorForCode(pr.ErrorCode); e != nil {
						failed = e
					}
				}
			}
		})
	if failed != nil && ctx.Err() != nil {
		return // shutting down: the revoke hook commits once more
	}
	if failed != nil {
		// The next tick or the revoke commits again; nothing is lost, at
		// worst finished requests are redone by the next owner.
		b.logger.Warn("committing finished requests", "err", failed)
		return
	}
	for _, p := range ps {
		if o, ok := offsets[p.id]; ok {
			p.committedAt(o.Offset)
		}
	}
}

// idSet is a set of ids bounded to a number of entries: past it, adding an
// id forgets the oldest one.
type idSet struct {
	at   map[string]int // id → its slot in ring
	ring []string       // ids in the order added; "" is a removed id
	next int            // the slot the next id takes once ring is full
	max  int
}

func newIDSet(max int) *idSet {
	return &idSet{at: map[string]int{}, max: max}
}

func (s *idSet) add(id string) {
	if _, ok := s.at[id]; ok {
		return
	}
	if len(s.ring) < s.max {
		s.at[id] = len(s.ring)
		s.ring = append(s.ring, id)
		return
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.at, old)
	}
	s.ring[s.next] = id
	s.at[id] = s.next
	s.next = (s.next + 1) % s.max
}

func (s *idSet) remove(id string) {
	if i, ok := s.at[id]; ok {
		s.ring[i] = ""
		delete(s.at, id)
	}
}

func (s *idSet) has(id string) bool {
	_, ok := s.at[id]
	return ok
}
