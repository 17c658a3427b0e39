package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Groups owns the consumer group engines of group fetch routes: one
// kafkaapi.Service per consume configuration in use, made by the first
// route that needs it and kept until Ferry stops. They are apart from the
// Kafka API's own service, so that kafka_api.allow does not apply to the
// routes (their allow rules do) and the routes work with the Kafka API
// disabled. An engine runs nothing until a call opens a session; its
// group members leave when idle for kafka_api.consume.subscription_timeout.
type Groups struct {
	clusters map[string]*kafka.Cluster
	names    []string
	produce  config.APIProduce
	logger   *slog.Logger

	mu      sync.Mutex
	engines map[config.APIConsume]*kafkaapi.Service
	closed  bool
}

// NewGroups returns an empty set of engines over clusters; names lists
// them in configured order. produce is how dead letters are written.
func NewGroups(clusters map[string]*kafka.Cluster, names []string, produce config.APIProduce, logger *slog.Logger) *Groups {
	return &Groups{clusters: clusters, names: names, produce: produce, logger: logger,
		engines: map[config.APIConsume]*kafkaapi.Service{}}
}

// Members counts the consumer group members the engines run.
func (gs *Groups) Members() int {
	n := 0
	for _, e := range gs.all() {
		n += e.Members()
	}
	return n
}

// Counts sums what the engines' members did, by cluster.
func (gs *Groups) Counts() map[string]kafkaapi.Counts {
	out := map[string]kafkaapi.Counts{}
	for _, e := range gs.all() {
		for cluster, c := range e.Counts() {
			t := out[cluster]
			t.Deliveries += c.Deliveries
			t.Redeliveries += c.Redeliveries
			t.Acks += c.Acks
			t.DeadLetters += c.DeadLetters
			out[cluster] = t
		}
	}
	return out
}

// Lag sums how far behind the engines' members are, by cluster, with the
// largest of one member.
func (gs *Groups) Lag() map[string]kafkaapi.Lag {
	out := map[string]kafkaapi.Lag{}
	for _, e := range gs.all() {
		for cluster, l := range e.Lag() {
			t := out[cluster]
			t.Records += l.Records
			t.MaxRecords = max(t.MaxRecords, l.MaxRecords)
			out[cluster] = t
		}
	}
	return out
}

// all returns the engines made so far.
func (gs *Groups) all() []*kafkaapi.Service {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	out := make([]*kafkaapi.Service, 0, len(gs.engines))
	for _, e := range gs.engines {
		out = append(out, e)
	}
	return out
}

// engine returns the engine of consume configuration cc, made on first
// use; UNAVAILABLE once Close began.
func (gs *Groups) engine(cc config.APIConsume) (*kafkaapi.Service, error) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.closed {
		return nil, status.Error(codes.Unavailable, "Ferry is shutting down")
	}
	s := gs.engines[cc]
	if s == nil {
		s = kafkaapi.New(config.KafkaAPI{Produce: gs.produce, Consume: cc}, gs.clusters, gs.names, gs.logger)
		gs.engines[cc] = s
	}
	return s, nil
}

// Close leaves every group after committing what was acknowledged (see
// kafkaapi.Service.Close): the streams still open end with UNAVAILABLE,
// and what they were sent and did not acknowledge is delivered again by
// the groups' other members. It is safe to call more than once.
func (gs *Groups) Close(ctx context.Context) error {
	gs.mu.Lock()
	gs.closed = true
	engines := make([]*kafkaapi.Service, 0, len(gs.engines))
	for _, s := range gs.engines {
		engines = append(engines, s)
	}
	gs.mu.Unlock()
	var errs []error
	for _, s := range engines {
		errs = append(errs, s.Close(ctx))
	}
	return errors.Join(errs...)
}

// GroupRoute is a fetch route with a group: it streams its topic as a
// member of a consumer group, each record to one of its callers, and
// takes their acknowledgements on its ack methods.
type GroupRoute struct {
	name    string
	cfg     *config.FetchRoute
	consume config.APIConsume
	groups  *Groups
	// json holds, per streaming method's path, the conversion of a topic
	// holding JSON (format: json).
	json map[string]*jsonFrames
}

// NewGroupRoute prepares a fetch route with a group (cfg.Group set),
// served by an engine of groups; nil groups makes a route that can only
// Bind.
func NewGroupRoute(name string, cfg *config.FetchRoute, groups *Groups) *GroupRoute {
	return &GroupRoute{name: name, cfg: cfg, consume: cfg.Group.Consume(cfg.Start), groups: groups, json: map[string]*jsonFrames{}}
}

// Bind accepts server-streaming methods, whose request may be any message
// (Ferry does not read it), and, when the caller acknowledges through a
// method (ack: method), unary methods whose request has the group's
// ack_id_field as a bytes field, singular or repeated: those are the ack
// methods.
func (r *GroupRoute) Bind(m *protoreg.Method) error {
	g := r.cfg.Group
	switch {
	case m.ServerStreaming && !m.ClientStreaming:
		j, err := newJSONFrames(r.name, r.cfg, m.Desc.Output())
		if j != nil {
			r.json[m.Path] = j
		}
		return err
	case m.ServerStreaming || m.ClientStreaming:
		return fmt.Errorf("fetch route %s: method %s must be server-streaming (the stream of the group's records) or unary (an ack method)", r.name, m.Path)
	case g.Ack != config.GroupAckMethod:
		return fmt.Errorf("fetch route %s: method %s is unary, which a group route takes as its ack method, but the group's ack mode is %s: route it elsewhere or use ack: method", r.name, m.Path, g.Ack)
	}
	in := m.Desc.Input()
	f := in.Fields().ByNumber(protowire.Number(g.AckIDField))
	if f == nil || f.Kind() != protoreflect.BytesKind {
		return fmt.Errorf("fetch route %s: ack method %s takes %s, which needs a bytes field (repeated for several ids) numbered %d for the message ids (group.ack_id_field)", r.name, m.Path, in.FullName(), g.AckIDField)
	}
	return nil
}

// Serve streams the group's records to one caller, or acknowledges the
// message ids of an ack method's request.
func (r *GroupRoute) Serve(ss grpc.ServerStream, m *protoreg.Method, _ metadata.MD) error {
	var req frame.Frame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	if !m.ServerStreaming {
		if err := r.ack(ss.Context(), req.Bytes); err != nil {
			return err
		}
		return ss.SendMsg(&frame.Frame{})
	}
	return r.stream(ss, r.json[m.Path])
}

// stream takes the caller's records from the engine one at a time, as
// fast as its stream takes them: with ack: method, no more than
// max_unacked_per_stream unacknowledged. As the call ends, whatever it was
// sent and did not acknowledge is delivered again at once, to the group's
// other callers.
//
// With json, a record that is not the JSON of the output type is handed
// back unsent, like a record its caller did not acknowledge, so that it
// ends in the dead-letter topic after max_deliveries, and the stream goes
// on: in a group, a record one caller cannot take is not the others' to
// wait for.
func (r *GroupRoute) stream(ss grpc.ServerStream, json *jsonFrames) error {
	ctx := ss.Context()
	engine, err := r.groups.engine(r.consume)
	if err != nil {
		return err
	}
	g := r.cfg.Group
	sess, err := engine.Open(ctx, r.cfg.Cluster, g.ID, r.cfg.Topic)
	if err != nil {
		return err
	}
	defer sess.Close(true)
	auto := g.Ack == config.GroupAckAuto
	field := protowire.Number(r.cfg.MessageIDField)
	out := &sender{ss: ss}
	for {
		if !auto {
			if err := sess.WaitOutstandingBelow(ctx, g.MaxUnackedPerStream); err != nil {
				return err
			}
		}
		msg, err := sess.Next(ctx)
		if err != nil {
			return err
		}
		value := msg.Value
		if json != nil {
			if value, err = json.format.AppendFromJSON(nil, json.out, msg.Value); err != nil {
				r.groups.logger.Warn("a record is not the JSON of the method's output type: handing it back, for the dead-letter topic after max_deliveries",
					"route", r.name, "topic", r.cfg.Topic, "partition", msg.Partition, "offset", msg.Offset, "type", json.out.FullName(), "err", err)
				if err := sess.Nack(msg.Partition, msg.Offset); err != nil {
					return err
				}
				continue
			}
		}
		id := appendGroupID(make([]byte, 0, 12), msg.Partition, msg.Offset)
		e := &entry{part: msg.Partition, off: msg.Offset, frame: withIDBytes(value, field, id), vlen: len(value),
			meta: metaOf(msg.Headers, r.cfg.MetaPrefix)}
		if err := out.send(e); err != nil {
			return err
		}
		if auto && ctx.Err() == nil {
			// Sent is acknowledged, unless the caller is seen gone by
			// now: Close then hands the record on. A partition the
			// group moved meanwhile is its new owner's to deliver
			// again: nothing to do here.
			_ = sess.Ack(msg.Partition, msg.Offset)
		}
	}
}

// ack acknowledges every message id in an ack method's request. Those
// that do not decode fail the call before any is acknowledged; those the
// engine refuses fail it after the others were acknowledged, with the
// engine's status (INVALID_ARGUMENT for a record never delivered,
// FAILED_PRECONDITION for one this instance no longer holds).
func (r *GroupRoute) ack(ctx context.Context, req []byte) error {
	g := r.cfg.Group
	var refs []kafkaapi.Ref
	var bad error
	ok := eachBytes(req, protowire.Number(g.AckIDField), func(id []byte) {
		p, o, err := ParseGroupID(id)
		if err != nil && bad == nil {
			bad = status.Errorf(codes.InvalidArgument, "message id %d of the request (field %d): %v", len(refs)+1, g.AckIDField, err)
		}
		refs = append(refs, kafkaapi.Ref{Partition: p, Offset: o})
	})
	switch {
	case !ok:
		return status.Error(codes.InvalidArgument, "the request does not decode as a protobuf message")
	case bad != nil:
		return bad
	case len(refs) == 0:
		return status.Errorf(codes.InvalidArgument, "the request carries no message id to acknowledge (field %d)", g.AckIDField)
	}
	engine, err := r.groups.engine(r.consume)
	if err != nil {
		return err
	}
	var first error
	failed := 0
	for _, ref := range refs {
		if err := engine.Ack(ctx, r.cfg.Cluster, g.ID, r.cfg.Topic, ref.Partition, ref.Offset); err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed == 0 || len(refs) == 1 {
		return first
	}
	st := status.Convert(first)
	return status.Errorf(st.Code(), "%d of the request's %d message ids were not acknowledged (the others were); the first: %s", failed, len(refs), st.Message())
}
