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
	"runtime"
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
	// the given offsets, with opts after the cluster's own.
	NewPartitionReader(topic string, from map[int32]int64, maxWait time.Duration, opts ...kgo.Opt) (*kgo.Client, error)
	// Reachable returns an error while the cluster is known to be
	// unreachable, so that callers fail at once instead of dialing it.
	Reachable() error
	// NoteUnreachable records a request that failed to reach the cluster.
	NoteUnreachable(err error)
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

// subscriber is one caller of a fetch route: its filters.
type subscriber struct {
	filters []filter
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
	hub, release, err := r.hubs.acquire(ctx, keyOf(r.cfg))
	if status.Code(err) == codes.Unavailable {
		return err
	}
	if err != nil {
		return r.hubs.kafkaError(ctx, r.cfg.Cluster, fmt.Sprintf("reading topic %q", r.cfg.Topic), err)
	}
	defer release()

	c := &cursor{s: &subscriber{filters: filters}}
	defer c.leave()
	out := &sender{ss: ss, json: r.json[m.Path]}

	if resume != nil && hub.joinResumed(c, resume) {
		r.hubs.counts.hits.Add(1)
	} else {
		pos, err := r.startPosition(ctx, hub, resume)
		if err != nil {
			return err
		}
		if pos == nil {
			hub.joinTail(c)
			r.hubs.counts.hits.Add(1)
		} else if err := r.attach(ctx, hub, c, pos, true); err != nil {
			return err
		}
	}
	field := protowire.Number(r.cfg.MessageIDField)
	// The caller takes entries into buf, which starts small and doubles,
	// up to max_buffered_per_subscriber, while it takes all it can: an
	// idle caller at the tail costs a few pointers, not the bound's.
	buf := make([]*entry, min(r.cfg.MaxBufferedPerSubscriber, 16))
	for {
		if c.t != nil && c.t.arrived.Load() {
			if err := r.toHub(ctx, hub, c); err != nil {
				return err
			}
		}
		batch, err := c.w.read(ctx, c, buf)
		if err == errBehind {
			// The caller reads more slowly than the topic is written, and
			// the cache (or its train) dropped its position. It reads on
			// from there on a train and joins the cache again once it
			// caught up; it is cut off only when no train can take it, a
			// budget every caller behind shares.
			pos, err := c.position()
			if err != nil {
				return status.Errorf(codes.Internal, "the position of the last message passed: %v", err)
			}
			c.leave()
			if err := r.attach(ctx, hub, c, pos, false); err != nil {
				if status.Code(err) == codes.ResourceExhausted {
					r.hubs.counts.cutOffs.Add(1)
					return status.Error(codes.ResourceExhausted, "the client read too slowly: the topic's cache (fetch.cache.max_bytes) dropped its position, and no catch-up reader took it within fetch.catch_up_wait: resume with the last message id")
				}
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if len(batch) == len(buf) && len(buf) < r.cfg.MaxBufferedPerSubscriber {
			buf = make([]*entry, min(2*len(buf), r.cfg.MaxBufferedPerSubscriber))
		}
		for i, e := range batch {
			batch[i] = nil
			if e = c.pass(e, field); e != nil {
				if err := out.send(e); err != nil {
					return err
				}
				if out.sent++; out.sent == 1 || out.sent%yieldEvery == 0 {
					// Callers often subscribe together (a restarted
					// instance's clients reconnecting): once its first
					// message is out, each lets the others send theirs
					// before it sends its backlog, and a caller with a
					// backlog lets others run every yieldEvery messages,
					// so that one subscribing meanwhile gets its first
					// message without waiting for every backlog's turn.
					runtime.Gosched()
				}
			}
		}
	}
}

// yieldEvery is how many messages a caller sends before it lets other
// goroutines run.
const yieldEvery = 64

// keyOf is the hub a fetch route reads from.
func keyOf(f *config.FetchRoute) hubKey {
	return hubKey{cluster: f.Cluster, topic: f.Topic, prefix: f.MetaPrefix, field: protowire.Number(f.MessageIDField)}
}

// startPosition is where the caller starts: nil means the tail (latest).
// A resume id's offsetEarliest and offsetLatest both become the
// partition's log start.
func (r *Route) startPosition(ctx context.Context, hub *Hub, resume Position) (Position, error) {
	if resume == nil && r.cfg.Start == "latest" {
		return nil, nil
	}
	if resume != nil {
		if pos, ok := hub.resumable(resume); ok {
			return pos, nil
		}
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

// attach places c in the hub's cache at pos. When the cache does not hold
// pos, a caller starting (fill) boards a running train that holds it, or
// waits for the hub's backfill, when the records before the cache fit in
// it; otherwise, and for a caller that fell behind, it rides a train
// until the cache holds its position.
func (r *Route) attach(ctx context.Context, hub *Hub, c *cursor, pos Position, fill bool) error {
	join := func() (bool, error) {
		for {
			joined, ahead := hub.join(c, pos)
			if !ahead {
				return joined, nil
			}
			// The caller's position is past the hub's on some partition:
			// wait for the hub rather than read on.
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return false, status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	joined, err := join()
	if err != nil || joined {
		if fill && joined {
			r.hubs.counts.hits.Add(1)
		}
		return err
	}
	if fill {
		r.hubs.counts.misses.Add(1)
		// A running train that holds pos serves at once; a backfill
		// takes a read of the records up to the cache first.
		if hub.board(c, pos) {
			return nil
		}
		if err := hub.fill(ctx, pos); err != nil {
			return err
		}
		if joined, err := join(); err != nil || joined {
			return err
		}
	}
	return r.board(ctx, hub, c, pos)
}

// board puts c on a train at pos: a running one whose window holds pos,
// or one of its own while a catch-up reader is free. Otherwise it waits,
// at most fetch.catch_up_wait, for either: a train coming up to pos picks
// it up.
func (r *Route) board(ctx context.Context, hub *Hub, c *cursor, pos Position) error {
	var expired <-chan time.Time
	if w := r.hubs.catchUpWait; w > 0 {
		t := time.NewTimer(w)
		defer t.Stop()
		expired = t.C
	}
	var tick *time.Ticker
	for {
		if hub.board(c, pos) {
			return nil
		}
		if started, err := hub.tryStartTrain(c, pos, r.hubs.catchUpSlots); started || err != nil {
			return err
		}
		if expired == nil {
			return errNoCatchUp(cap(r.hubs.catchUpSlots))
		}
		if tick == nil {
			tick = time.NewTicker(boardPoll)
			defer tick.Stop()
		}
		select {
		case <-tick.C:
		case <-expired:
			return errNoCatchUp(cap(r.hubs.catchUpSlots))
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// boardPoll is how often a caller waiting for a train looks for one that
// came up to its position.
const boardPoll = 20 * time.Millisecond

// errNoCatchUp is a caller behind the cache that no train took.
func errNoCatchUp(n int) error {
	return status.Errorf(codes.ResourceExhausted,
		"all %d catch-up readers of this Ferry instance are busy with callers behind their topic's cache, none of them at this caller's position (fetch.max_catch_up_readers): retry later, with your last message id if you have one", n)
}

// toHub moves a rider of a train that reached the hub's cache into the
// cache, once the cache holds the rider's position; until then the rider
// stays aboard.
func (r *Route) toHub(ctx context.Context, hub *Hub, c *cursor) error {
	pos, err := c.position()
	if err != nil {
		return status.Errorf(codes.Internal, "the position of the last message passed: %v", err)
	}
	// Join into a cursor of its own first: the rider leaves the train
	// only once the cache took it.
	n := cursor{s: c.s}
	joined, ahead := hub.join(&n, pos)
	switch {
	case joined:
		c.leave()
		*c = n
	case ahead:
		// The train read further than the hub on some partition: the
		// hub has those records to read yet. Wait for it in the cache.
		c.leave()
		return r.attach(ctx, hub, c, pos, false)
	}
	return nil
}

// sender sends response messages, the first record's meta: headers as the
// response headers.
type sender struct {
	ss     grpc.ServerStream
	headed bool
	// sent counts the messages sent.
	sent int
	// json converts the records of a topic holding JSON; nil sends
	// record values as they are.
	json *jsonFrames
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
	switch {
	case o.json != nil:
		msg, err := o.json.frame(e)
		if err != nil {
			return err
		}
		return o.ss.SendMsg(&frame.Frame{Bytes: msg})
	case e.msg != nil:
		return o.ss.SendMsg(e.msg)
	default:
		return o.ss.SendMsg(&frame.Frame{Bytes: e.frame})
	}
}
