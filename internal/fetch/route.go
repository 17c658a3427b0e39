// Package fetch is Ferry's Kafka topic → gRPC server stream capability: a
// server-streaming method whose request is google.protobuf.Empty streams a
// topic's records to every caller, each response message carrying a
// message id the caller can send back to resume exactly where it stopped.
// One hub per topic reads each partition once for every subscriber.
package fetch

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferryproxy/ferry/internal/auth"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Cluster is what fetch routes need of a Kafka cluster (a *kafka.Cluster).
type Cluster interface {
	// ListOffsets lists every partition's offset at a position, through
	// the cluster's shared admin client: a burst of thousands of callers
	// must not become thousands of Kafka connections.
	ListOffsets(ctx context.Context, topic string, at kafka.Position) (map[int32]int64, error)
	// NewPartitionReader returns a client reading topic's partitions from
	// the given offsets.
	NewPartitionReader(topic string, from map[int32]int64, maxWait time.Duration) (*kgo.Client, error)
	// Reachable returns an error while the cluster is known to be
	// unreachable, so that callers fail at once instead of dialing it.
	Reachable() error
	// NoteUnreachable records a request that failed to reach the cluster.
	NoteUnreachable(err error)
}

// Options configure Hubs.
type Options struct {
	// Clusters returns the named cluster.
	Clusters func(name string) Cluster
	// RingSize is how many recent records each hub keeps for subscribers
	// joining from behind.
	RingSize int
	// MaxCatchUps bounds the catch-up readers running at once; CatchUpWait
	// is how long a caller waits for one before RESOURCE_EXHAUSTED.
	MaxCatchUps int
	CatchUpWait time.Duration
	// PartitionRefresh is how often a hub looks for partitions its topic
	// gained; 0 never.
	PartitionRefresh time.Duration
	Logger           *slog.Logger
}

// Hubs owns the hubs of this Ferry instance, one per (cluster, topic,
// message id field, meta prefix), started by their first subscriber and
// stopped when their last subscriber leaves.
type Hubs struct {
	clusters    func(name string) Cluster
	ringSize    int
	catchUpWait time.Duration
	refresh     time.Duration
	logger      *slog.Logger
	// catchUpSlots holds a token per running catch-up reader: each is a
	// Kafka client with connections of its own, and a burst of callers
	// from behind must not run the process out of file descriptors.
	// Callers waiting for a slot are served in order by the channel.
	catchUpSlots chan struct{}

	mu   sync.Mutex
	hubs map[hubKey]*hubRef

	catchUps atomic.Int64
	counts   counts
}

// counts are what the hubs did since Ferry started, for metrics.
type counts struct {
	// records are the records the hubs read, each offered to every
	// subscriber of its hub.
	records atomic.Int64
	// cutOffs are the callers cut off for reading too slowly.
	cutOffs atomic.Int64
}

type hubKey struct {
	cluster, topic, prefix string
	field                  protowire.Number
}

type hubRef struct {
	hub  *Hub
	refs int
}

// NewHubs returns an empty set of hubs.
func NewHubs(o Options) *Hubs {
	return &Hubs{clusters: o.Clusters, ringSize: o.RingSize, catchUpWait: o.CatchUpWait, refresh: o.PartitionRefresh, logger: o.Logger,
		catchUpSlots: make(chan struct{}, max(o.MaxCatchUps, 1)),
		hubs:         map[hubKey]*hubRef{}}
}

// takeCatchUp waits, at most catchUpWait, for a catch-up reader to be free
// and returns the function that frees it again.
func (hs *Hubs) takeCatchUp(ctx context.Context) (func(), error) {
	release := func() { <-hs.catchUpSlots }
	select {
	case hs.catchUpSlots <- struct{}{}:
		return release, nil
	default:
	}
	if hs.catchUpWait > 0 {
		t := time.NewTimer(hs.catchUpWait)
		defer t.Stop()
		select {
		case hs.catchUpSlots <- struct{}{}:
			return release, nil
		case <-t.C:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil, status.Errorf(codes.ResourceExhausted,
		"all %d catch-up readers of this Ferry instance are busy with callers starting behind the topic's end (fetch.max_catch_up_readers): retry later, with your last message id if you have one",
		cap(hs.catchUpSlots))
}

// reachable fails with UNAVAILABLE while cluster is known to be
// unreachable, so that callers during an outage do not each dial it.
func (hs *Hubs) reachable(cluster string) error {
	if err := hs.clusters(cluster).Reachable(); err != nil {
		return status.Errorf(codes.Unavailable, "%v: retry later", err)
	}
	return nil
}

// kafkaError is a failed Kafka request as the caller gets it, "op: err"
// with the code kafka.Code gives err, and tells the cluster when the
// request did not reach it (not when the caller left).
func (hs *Hubs) kafkaError(ctx context.Context, cluster, op string, err error) error {
	if ctx.Err() == nil {
		hs.clusters(cluster).NoteUnreachable(err)
	}
	return kafka.Wrap(op, err)
}

// Stats counts the Kafka readers of fetch routes — one hub per topic in
// use, and one catch-up reader per subscriber still reading from behind —
// and the subscribers the hubs serve.
type Stats struct {
	Hubs, CatchUps int
	// Subscribers are the callers a hub serves: those that started at
	// the tail, and those that caught up and joined it.
	Subscribers int
}

// Counts are what the hubs did since Ferry started.
type Counts struct {
	// Records are the records the hubs read, each offered to every
	// subscriber of its hub.
	Records int64
	// CutOffs are the callers cut off because they read too slowly.
	CutOffs int64
}

// Counts returns what the hubs did since Ferry started.
func (hs *Hubs) Counts() Counts {
	return Counts{Records: hs.counts.records.Load(), CutOffs: hs.counts.cutOffs.Load()}
}

// Stats returns how many Kafka readers are running and how many callers
// the hubs serve.
func (hs *Hubs) Stats() Stats {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	st := Stats{Hubs: len(hs.hubs), CatchUps: int(hs.catchUps.Load())}
	for _, ref := range hs.hubs {
		st.Subscribers += ref.hub.subscribers()
	}
	return st
}

func (hs *Hubs) acquire(ctx context.Context, k hubKey) (*Hub, func(), error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	ref := hs.hubs[k]
	if ref == nil {
		// Starting a hub lists offsets: during an outage, fail at once
		// rather than dial. A running hub serves callers at the tail
		// without Kafka, and reads on once Kafka is back.
		if err := hs.reachable(k.cluster); err != nil {
			return nil, nil, err
		}
		h, err := startHub(ctx, hs.clusters(k.cluster), k.topic, k.field, k.prefix, hs.ringSize, hs.refresh, &hs.counts, hs.logger)
		if err != nil {
			return nil, nil, err
		}
		ref = &hubRef{hub: h}
		hs.hubs[k] = ref
	}
	ref.refs++
	var once sync.Once
	return ref.hub, func() {
		once.Do(func() {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			if ref.refs--; ref.refs == 0 {
				delete(hs.hubs, k)
				ref.hub.close()
			}
		})
	}, nil
}

// Close stops every hub still running. Call it after the gRPC server
// stopped. A hub stops as soon as its poll sees the cancellation, so ctx
// is not used. It is safe to call more than once.
func (hs *Hubs) Close(context.Context) error {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for k, ref := range hs.hubs {
		ref.hub.close()
		delete(hs.hubs, k)
	}
	return nil
}

// Route is one configured fetch route.
type Route struct {
	name string
	cfg  *config.FetchRoute
	hubs *Hubs
	// requests holds, per method path, the filters compiled against its
	// request type, when filters take values from the request.
	requests map[string]*requestFilters
	// json holds, per method path, the conversion of the records of a
	// route whose format is json (see format.go).
	json map[string]*jsonFrames
}

// NewRoute prepares a fetch route served from hubs.
func NewRoute(name string, cfg *config.FetchRoute, hubs *Hubs) *Route {
	return &Route{name: name, cfg: cfg, hubs: hubs, requests: map[string]*requestFilters{}, json: map[string]*jsonFrames{}}
}

// Bind accepts only server-streaming methods. Their request is
// google.protobuf.Empty, unless filters take values from the request
// (key_from_request, headers_from_request): the request type must then
// have the fields they name.
func (r *Route) Bind(m *protoreg.Method) error {
	if !m.ServerStreaming || m.ClientStreaming {
		return fmt.Errorf("fetch route %s: method %s must be server-streaming (rpc %s(google.protobuf.Empty) returns (stream ...))", r.name, m.Path, m.Name)
	}
	if err := r.bindFormat(m.Desc, m.Path); err != nil {
		return err
	}
	if usesRequest(r.cfg.Filters) {
		rf, err := newRequestFilters(r.cfg.Filters, m.Desc.Input())
		if err != nil {
			return fmt.Errorf("fetch route %s, method %s: %w", r.name, m.Path, err)
		}
		r.requests[m.Path] = rf
		return nil
	}
	if in := m.Desc.Input().FullName(); in != "google.protobuf.Empty" {
		return fmt.Errorf("fetch route %s: method %s takes %s, but a fetch method's request must be google.protobuf.Empty unless filters take values from it (key_from_request, headers_from_request)", r.name, m.Path, in)
	}
	return nil
}

// subscriber is one caller of a fetch route.
type subscriber struct {
	filters []filter
	ch      chan *entry
	cutOnce sync.Once
	cut     chan struct{}
}

// offer queues e if the subscriber's filters select it. It never blocks:
// a subscriber whose queue is full is cut off, and offer returns false.
func (s *subscriber) offer(e *entry) bool {
	if !s.selects(e.key, e.hdrs) {
		return true
	}
	select {
	case s.ch <- e:
		return true
	default:
		s.cutOnce.Do(func() { close(s.cut) })
		return false
	}
}

// filter is one configured filter with the caller's metadata filled in.
type filter struct {
	key     []byte
	hasKey  bool
	headers map[string][]byte
}

func (s *subscriber) selects(key []byte, hs []kgo.RecordHeader) bool {
	if len(s.filters) == 0 {
		return true
	}
outer:
	for _, f := range s.filters {
		if f.hasKey && !bytes.Equal(f.key, key) {
			continue
		}
		for name, want := range f.headers {
			found := false
			for _, h := range hs {
				if h.Key == name && bytes.Equal(h.Value, want) {
					found = true
					break
				}
			}
			if !found {
				continue outer
			}
		}
		return true
	}
	return false
}

// compileFilters fills the route's filters with the caller's metadata and
// identity (nil for an anonymous caller).
func compileFilters(cfg []config.FetchFilter, md metadata.MD, id *auth.Identity, rf *requestFilters, req protoreflect.Message) ([]filter, error) {
	out := make([]filter, 0, len(cfg))
	value := func(name string) (string, error) {
		vs := md.Get(name)
		if len(vs) == 0 {
			return "", status.Errorf(codes.InvalidArgument, "this method filters by the request metadata entry %q: send it", name)
		}
		return vs[0], nil
	}
	identity := func() ([]byte, error) {
		if id == nil {
			return nil, status.Error(codes.Unauthenticated, "this method streams each caller its own records: call with credentials")
		}
		return []byte(id.Name), nil
	}
	for _, c := range cfg {
		f := filter{headers: map[string][]byte{}}
		switch {
		case c.Key != "":
			f.key, f.hasKey = []byte(c.Key), true
		case c.KeyFromMetadata != "":
			v, err := value(c.KeyFromMetadata)
			if err != nil {
				return nil, err
			}
			f.key, f.hasKey = []byte(v), true
		case c.KeyFromIdentity:
			v, err := identity()
			if err != nil {
				return nil, err
			}
			f.key, f.hasKey = v, true
		}
		for h, v := range c.Headers {
			f.headers[h] = []byte(v)
		}
		for h, name := range c.HeadersFromMetadata {
			v, err := value(name)
			if err != nil {
				return nil, err
			}
			f.headers[h] = []byte(v)
		}
		for _, h := range c.HeadersFromIdentity {
			v, err := identity()
			if err != nil {
				return nil, err
			}
			f.headers[h] = v
		}
		if rf != nil {
			rf.fill(len(out), &f, req)
		}
		out = append(out, f)
	}
	return out, nil
}

// resumeID returns the position in the caller's last message id, if any.
func (r *Route) resumeID(md metadata.MD) (Position, error) {
	name := r.cfg.LastMessageIDMetadata
	var raw []byte
	if vs := md.Get(name + "-bin"); len(vs) > 0 {
		raw = []byte(vs[0]) // gRPC has decoded binary metadata already
	} else if vs := md.Get(name); len(vs) > 0 {
		b, err := decodeIDText(vs[0])
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s is not base64url: %v", name, err)
		}
		raw = b
	} else {
		return nil, nil
	}
	p, err := parseID(raw)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s does not decode: %v", name, err)
	}
	return p, nil
}

// Serve streams the route's topic to one caller.
func (r *Route) Serve(ss grpc.ServerStream, m *protoreg.Method, md metadata.MD) error {
	ctx := ss.Context()
	var req frame.Frame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	rf := r.requests[m.Path]
	var reqMsg protoreflect.Message
	switch {
	case rf != nil:
		var err error
		if reqMsg, err = rf.decode(req.Bytes); err != nil {
			return err
		}
	case len(req.Bytes) != 0:
		return status.Errorf(codes.InvalidArgument, "%s takes google.protobuf.Empty, but the request has %d bytes of fields", m.Path, len(req.Bytes))
	}
	filters, err := compileFilters(r.cfg.Filters, md, auth.FromContext(ctx), rf, reqMsg)
	if err != nil {
		return err
	}
	resume, err := r.resumeID(md)
	if err != nil {
		return err
	}
	k := hubKey{cluster: r.cfg.Cluster, topic: r.cfg.Topic, prefix: r.cfg.MetaPrefix, field: protowire.Number(r.cfg.MessageIDField)}
	hub, release, err := r.hubs.acquire(ctx, k)
	if status.Code(err) == codes.Unavailable {
		return err
	}
	if err != nil {
		return r.hubs.kafkaError(ctx, r.cfg.Cluster, fmt.Sprintf("reading topic %q", r.cfg.Topic), err)
	}
	defer release()

	newSub := func() *subscriber {
		return &subscriber{filters: filters, ch: make(chan *entry, r.cfg.MaxBufferedPerSubscriber), cut: make(chan struct{})}
	}
	s := newSub()
	defer func() { hub.unsubscribe(s) }()
	out := &sender{ss: ss, json: r.json[m.Path]}

	pos, err := r.startPosition(ctx, resume)
	if err != nil {
		return err
	}
	if pos == nil {
		out.pos = hub.subscribeAtTail(s)
	} else {
		out.pos = pos
		if err := r.catchUp(ctx, hub, s, pos, out); err != nil {
			return err
		}
	}
	for {
		select {
		case e := <-s.ch:
			if err := out.send(e); err != nil {
				return err
			}
		case <-s.cut:
			// Send what is queued.
		drain:
			for {
				select {
				case e := <-s.ch:
					if err := out.send(e); err != nil {
						return err
					}
				default:
					break drain
				}
			}
			// The caller fell behind the hub: a burst came faster than it
			// reads, or it reads slowly. It reads on from where it is on a
			// reader of its own and joins the hub again once it caught
			// up; it is cut off only when no catch-up reader is free, a
			// budget every caller behind shares.
			pos, err := out.position()
			if err != nil {
				return status.Errorf(codes.Internal, "the position of the last message sent: %v", err)
			}
			hub.unsubscribe(s)
			s = newSub()
			if err := r.catchUp(ctx, hub, s, pos, out); err != nil {
				if status.Code(err) == codes.ResourceExhausted {
					r.hubs.counts.cutOffs.Add(1)
					return status.Errorf(codes.ResourceExhausted, "the client read too slowly and fell more than %d messages behind, and no catch-up reader became free: resume with the last message id", r.cfg.MaxBufferedPerSubscriber)
				}
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// startPosition is where the caller starts: nil means the tail (latest).
// A resume id's offsetEarliest and offsetLatest both become the
// partition's log start.
func (r *Route) startPosition(ctx context.Context, resume Position) (Position, error) {
	if resume == nil && r.cfg.Start == "latest" {
		return nil, nil
	}
	if err := r.hubs.reachable(r.cfg.Cluster); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cluster := r.hubs.clusters(r.cfg.Cluster)
	list := func(at kafka.Position) (Position, error) {
		p, err := listOffsets(lctx, cluster, r.cfg.Topic, at)
		if err != nil {
			return nil, r.hubs.kafkaError(ctx, r.cfg.Cluster, fmt.Sprintf("listing offsets of topic %q", r.cfg.Topic), err)
		}
		return p, nil
	}
	switch {
	case resume != nil:
		starts, err := list(kafka.AtStart())
		if err != nil {
			return nil, err
		}
		ends, err := list(kafka.AtEnd())
		if err != nil {
			return nil, err
		}
		for p, off := range resume {
			if _, ok := starts[p]; !ok {
				return nil, status.Errorf(codes.InvalidArgument, "the message id names partition %d, which topic %q does not have", p, r.cfg.Topic)
			}
			switch off {
			case offsetEarliest, offsetLatest:
				// Nothing of this partition was delivered (Zilla's ids say
				// so), and where its subscriber began is not in the id:
				// -1 was "the end" when it started, not now. Everything
				// still in the log is read, so nothing written since is
				// missed; the price is the partition's older records,
				// which the client never got either.
			default:
				// Records before the log start are gone (retention); an
				// offset past the end cannot have been delivered.
				starts[p] = min(max(off, starts[p]), ends[p])
			}
		}
		return starts, nil
	case r.cfg.Start == "earliest":
		return list(kafka.AtStart())
	default:
		// A time after a partition's last record lists its end.
		at, _ := time.Parse(time.RFC3339, r.cfg.Start)
		return list(kafka.AtOrAfter(at))
	}
}

// catchUp reads from pos on a reader of the subscriber's own until it can
// join the hub's tail.
func (r *Route) catchUp(ctx context.Context, hub *Hub, s *subscriber, pos Position, out *sender) error {
	if joined, _ := hub.join(s, pos); joined {
		return nil
	}
	free, err := r.hubs.takeCatchUp(ctx)
	if err != nil {
		return err
	}
	defer free()
	cl, err := r.hubs.clusters(r.cfg.Cluster).NewPartitionReader(r.cfg.Topic, pos, 100*time.Millisecond)
	if err != nil {
		return kafka.Wrap(fmt.Sprintf("reading topic %q", r.cfg.Topic), err)
	}
	r.hubs.catchUps.Add(1)
	defer r.hubs.catchUps.Add(-1)
	defer cl.Close()
	field := protowire.Number(r.cfg.MessageIDField)
	for {
		joined, ahead := hub.join(s, pos)
		if joined {
			return nil
		}
		if ahead {
			// This reader got further than the hub on some partition: wait
			// for the hub rather than read on.
			select {
			case <-time.After(5 * time.Millisecond):
				continue
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		var err error
		fs.EachRecord(func(rec *kgo.Record) {
			if err != nil || rec.Offset < pos[rec.Partition] {
				return
			}
			pos[rec.Partition] = rec.Offset + 1
			if !s.selects(rec.Key, rec.Headers) {
				return
			}
			err = out.send(&entry{part: rec.Partition, off: rec.Offset, frame: withID(rec.Value, field, pos), vlen: len(rec.Value), meta: metaOf(rec.Headers, r.cfg.MetaPrefix)})
		})
		if err != nil {
			return err
		}
	}
}

// sender sends response messages, the first record's meta: headers as the
// response headers.
type sender struct {
	ss     grpc.ServerStream
	headed bool
	// json converts the records of a topic holding JSON; nil sends
	// record values as they are.
	json *jsonFrames
	// pos is where the caller started; last is the last entry sent, whose
	// message id is the caller's position since.
	pos  Position
	last *entry
}

// position returns the caller's position: after the last message sent.
func (o *sender) position() (Position, error) {
	if o.last == nil {
		return o.pos.clone(), nil
	}
	id, err := entryID(o.last)
	if err != nil {
		return nil, err
	}
	return parseID(id)
}

func (o *sender) send(e *entry) error {
	if !o.headed {
		o.headed = true
		if len(e.meta) > 0 {
			if err := o.ss.SendHeader(e.meta); err != nil {
				return err
			}
		}
	}
	msg := e.frame
	if o.json != nil {
		var err error
		if msg, err = o.json.frame(e); err != nil {
			return err
		}
	}
	if err := o.ss.SendMsg(&frame.Frame{Bytes: msg}); err != nil {
		return err
	}
	o.last = e
	return nil
}
