// Package ferryapi serves Ferry's own Kafka API, the ferry.kafka.v1.Kafka
// service, on the kafkaapi engine: Server is its gRPC face and
// NewRESTHandler its REST/JSON face (the google.api.http bindings of
// api/ferry/kafka/v1/kafka.proto), transcoded to calls on the same gRPC
// server.
package ferryapi

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

const (
	// maxPollMessages bounds PollRequest.max_messages, as the contract says.
	maxPollMessages = 1000
	// defaultMaxUnacked is SubscribeRequest.max_unacked when unset.
	defaultMaxUnacked = 100
	// defaultMaxInFlight bounds a ProduceStream when the configuration
	// leaves Produce.MaxInFlightPerStream unset.
	defaultMaxInFlight = 4096
)

// Server implements kafkav1.KafkaServer on a kafkaapi.Service. Register it
// with kafkav1.RegisterKafkaServer; NewRESTHandler then serves its REST
// bindings from the same grpc.Server.
type Server struct {
	kafkav1.UnimplementedKafkaServer

	svc            *kafkaapi.Service
	logger         *slog.Logger
	defaultCluster string
}

var _ kafkav1.KafkaServer = (*Server)(nil)

// NewServer returns the gRPC service over svc, which holds the
// configuration in force.
func NewServer(svc *kafkaapi.Service, logger *slog.Logger) *Server {
	s := &Server{
		svc:    svc,
		logger: logger.With("component", "ferry-kafka-api"),
	}
	if names := svc.Clusters(); len(names) > 0 {
		s.defaultCluster = names[0]
	}
	return s
}

// invalid is the INVALID_ARGUMENT status for a request field.
func invalid(field, format string, args ...any) error {
	args = append([]any{field}, args...)
	return status.Errorf(codes.InvalidArgument, "%s: "+format, args...)
}

// required checks that the named request fields are set; pairs are field
// name, value.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return invalid(pairs[i], "is required")
		}
	}
	return nil
}

// Produce writes one record, or starts writing it when async is set.
func (s *Server) Produce(ctx context.Context, req *kafkav1.ProduceRequest) (*kafkav1.ProduceResponse, error) {
	rec, err := toRecord(req)
	if err != nil {
		return nil, err
	}
	if req.GetAsync() {
		if err := s.svc.ProduceDetached(ctx, req.GetCluster(), req.GetTopic(), rec); err != nil {
			return nil, err
		}
		return &kafkav1.ProduceResponse{Partition: -1, Offset: -1}, nil
	}
	res, err := s.svc.Produce(ctx, req.GetCluster(), req.GetTopic(), rec)
	if err != nil {
		return nil, err
	}
	return &kafkav1.ProduceResponse{Partition: res.Partition, Offset: res.Offset, Timestamp: timestamp(res.Timestamp)}, nil
}

// Poll acknowledges req.acks, then waits for up to req.max_messages
// messages. Unacknowledged messages it returns are redelivered after the
// ack timeout.
func (s *Server) Poll(ctx context.Context, req *kafkav1.PollRequest) (*kafkav1.PollResponse, error) {
	if err := required("topic", req.GetTopic(), "group", req.GetGroup()); err != nil {
		return nil, err
	}
	limit := int(req.GetMaxMessages())
	switch {
	case limit < 0 || limit > maxPollMessages:
		return nil, invalid("max_messages", "%d is out of range: at most %d, 0 means 1", limit, maxPollMessages)
	case limit == 0:
		limit = 1
	}
	timeout := s.svc.Config().Consume.LongPollTimeout
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, invalid("timeout", "%v", err)
		}
		if timeout = t.AsDuration(); timeout < 0 {
			return nil, invalid("timeout", "must not be negative")
		}
	}
	cluster, group, topic := req.GetCluster(), req.GetGroup(), req.GetTopic()
	// An ack for a partition this instance no longer owns (the member
	// left when idle, or a rebalance moved it) is skipped, as on Consume
	// streams: its new owner delivers the message again, and failing the
	// poll would make a client that retries with the same acks loop.
	if err := s.ack(ctx, cluster, group, topic, req.GetAcks(), true); err != nil {
		return nil, err
	}
	sess, err := s.svc.Open(ctx, cluster, group, topic)
	if err != nil {
		return nil, err
	}
	// A poll's client acknowledges later, in another call: what it does
	// not acknowledge waits for the ack timeout.
	defer sess.Close(false)

	first, ok := sess.TryNext()
	if !ok {
		if timeout <= 0 {
			return &kafkav1.PollResponse{}, nil
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		first, err = sess.Next(wctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				return &kafkav1.PollResponse{}, nil // nothing came in time
			}
			return nil, err
		}
	}
	msgs := []*kafkaapi.Message{first}
	for len(msgs) < limit {
		m, ok := sess.TryNext()
		if !ok {
			break
		}
		msgs = append(msgs, m)
	}
	resp := &kafkav1.PollResponse{Messages: make([]*kafkav1.Message, len(msgs))}
	for i, m := range msgs {
		resp.Messages[i] = toMessage(m, req.GetValueFormat())
	}
	if req.GetAutoAck() {
		s.autoAck(ctx, sess, cluster, group, topic, msgs)
	}
	// A poll's response is handed to grpc-go as it returns: its delivery
	// spans end here.
	kafkaapi.EndDeliveries(kafkaapi.TraceDeliveries(ctx, group, len(msgs), func(i int) *kafkaapi.Message { return msgs[i] }), nil)
	return resp, nil
}

// autoAck acknowledges messages as they are handed out (auto_ack), under
// one lock. A failure is logged, not returned: the client has its message,
// which is delivered again later (at least once).
func (s *Server) autoAck(ctx context.Context, sess *kafkaapi.Session, cluster, group, topic string, msgs []*kafkaapi.Message) {
	refs := make([]kafkaapi.Ref, len(msgs))
	for i, m := range msgs {
		refs[i] = kafkaapi.Ref{Partition: m.Partition, Offset: m.Offset}
	}
	for _, f := range sess.AckAll(ctx, refs) {
		level := slog.LevelWarn
		if status.Code(f.Err) == codes.FailedPrecondition {
			level = slog.LevelInfo // the partition moved: its new owner redelivers
		}
		s.logger.Log(context.Background(), level, "auto-acknowledging failed",
			"cluster", cluster, "group", group, "topic", topic, "partition", f.Partition, "offset", f.Offset, "err", f.Err)
	}
}

// Ack acknowledges delivered messages, wherever they were delivered.
func (s *Server) Ack(ctx context.Context, req *kafkav1.AckRequest) (*kafkav1.AckResponse, error) {
	if err := required("topic", req.GetTopic(), "group", req.GetGroup()); err != nil {
		return nil, err
	}
	if err := s.ack(ctx, req.GetCluster(), req.GetGroup(), req.GetTopic(), req.GetAcks(), false); err != nil {
		return nil, err
	}
	return &kafkav1.AckResponse{}, nil
}

// ack acknowledges every ref, one failing not holding up the others, and
// returns the first error; with skipMoved, FAILED_PRECONDITION (the
// partition is not this instance's) is logged and skipped.
func (s *Server) ack(ctx context.Context, cluster, group, topic string, refs []*kafkav1.MessageRef, skipMoved bool) error {
	if len(refs) == 0 {
		return nil
	}
	var first error
	for _, r := range refs {
		err := s.svc.Ack(ctx, cluster, group, topic, r.GetPartition(), r.GetOffset())
		switch {
		case err == nil:
		case skipMoved && status.Code(err) == codes.FailedPrecondition:
			s.logger.Info("acknowledging a message on Poll failed: skipped", "cluster", cluster, "group", group,
				"topic", topic, "partition", r.GetPartition(), "offset", r.GetOffset(), "err", err)
		case first == nil:
			first = err
		}
	}
	return first
}

// GetOffsets reports the group's offsets on every partition of the topic.
func (s *Server) GetOffsets(ctx context.Context, req *kafkav1.GetOffsetsRequest) (*kafkav1.GetOffsetsResponse, error) {
	if err := required("topic", req.GetTopic(), "group", req.GetGroup()); err != nil {
		return nil, err
	}
	offs, err := s.svc.GetOffsets(ctx, req.GetCluster(), req.GetGroup(), req.GetTopic())
	if err != nil {
		return nil, err
	}
	resp := &kafkav1.GetOffsetsResponse{Partitions: make([]*kafkav1.PartitionOffsets, len(offs))}
	for i, o := range offs {
		resp.Partitions[i] = &kafkav1.PartitionOffsets{
			Partition:  o.Partition,
			Begin:      o.Begin,
			End:        o.End,
			Committed:  o.Committed,
			Lag:        o.Lag,
			Metadata:   o.Metadata,
			SparseAcks: o.SparseAcks,
		}
	}
	return resp, nil
}

// SetOffsets moves the group's committed offsets to the request's target.
func (s *Server) SetOffsets(ctx context.Context, req *kafkav1.SetOffsetsRequest) (*kafkav1.SetOffsetsResponse, error) {
	if err := required("topic", req.GetTopic(), "group", req.GetGroup()); err != nil {
		return nil, err
	}
	cluster, group, topic := req.GetCluster(), req.GetGroup(), req.GetTopic()
	var (
		set []kafkaapi.OffsetTarget
		err error
	)
	switch t := req.GetTarget().(type) {
	case *kafkav1.SetOffsetsRequest_Offsets:
		parts := t.Offsets.GetPartitions()
		if len(parts) == 0 {
			return nil, invalid("offsets.partitions", "is empty: name at least one partition")
		}
		targets := make([]kafkaapi.OffsetTarget, len(parts))
		for i, p := range parts {
			targets[i] = kafkaapi.OffsetTarget{Partition: p.GetPartition(), Offset: p.GetOffset(), Metadata: p.GetMetadata()}
		}
		set, err = s.svc.SetOffsets(ctx, cluster, group, topic, targets)
	case *kafkav1.SetOffsetsRequest_Timestamp:
		if err := t.Timestamp.CheckValid(); err != nil {
			return nil, invalid("timestamp", "%v", err)
		}
		set, err = s.svc.ResetOffsets(ctx, cluster, group, topic, t.Timestamp.AsTime(), "")
	case *kafkav1.SetOffsetsRequest_Position:
		if t.Position != "earliest" && t.Position != "latest" {
			return nil, invalid("position", "%q is not \"earliest\" or \"latest\"", t.Position)
		}
		set, err = s.svc.ResetOffsets(ctx, cluster, group, topic, time.Time{}, t.Position)
	default:
		return nil, invalid("target", "is required: set offsets, timestamp or position")
	}
	if err != nil {
		return nil, err
	}
	resp := &kafkav1.SetOffsetsResponse{Partitions: make([]*kafkav1.PartitionTarget, len(set))}
	for i, t := range set {
		resp.Partitions[i] = &kafkav1.PartitionTarget{Partition: t.Partition, Offset: t.Offset, Metadata: t.Metadata}
	}
	return resp, nil
}

// ListClusters lists the configured clusters, the default first.
func (s *Server) ListClusters(context.Context, *kafkav1.ListClustersRequest) (*kafkav1.ListClustersResponse, error) {
	return &kafkav1.ListClustersResponse{Clusters: s.svc.Clusters()}, nil
}

// ListTopics lists the cluster's topics.
func (s *Server) ListTopics(ctx context.Context, req *kafkav1.ListTopicsRequest) (*kafkav1.ListTopicsResponse, error) {
	topics, err := s.svc.ListTopics(ctx, req.GetCluster(), req.GetInternal())
	if err != nil {
		return nil, err
	}
	return &kafkav1.ListTopicsResponse{Topics: topics}, nil
}

// DescribeTopic reports a topic's partitions and configuration.
func (s *Server) DescribeTopic(ctx context.Context, req *kafkav1.DescribeTopicRequest) (*kafkav1.TopicDescription, error) {
	if err := required("topic", req.GetTopic()); err != nil {
		return nil, err
	}
	info, err := s.svc.DescribeTopic(ctx, req.GetCluster(), req.GetTopic(), true)
	if err != nil {
		return nil, err
	}
	d := &kafkav1.TopicDescription{
		Topic:      info.Topic,
		Partitions: make([]*kafkav1.PartitionInfo, len(info.Partitions)),
		Configs:    make([]*kafkav1.ConfigEntry, len(info.Configs)),
	}
	for i, p := range info.Partitions {
		d.Partitions[i] = &kafkav1.PartitionInfo{Partition: p.Partition, Leader: p.Leader, Replicas: p.Replicas, Isr: p.ISR}
	}
	for i, c := range info.Configs {
		d.Configs[i] = &kafkav1.ConfigEntry{Name: c.Name, Value: c.Value, Source: c.Source}
	}
	return d, nil
}

// ListGroups lists the cluster's consumer groups.
func (s *Server) ListGroups(ctx context.Context, req *kafkav1.ListGroupsRequest) (*kafkav1.ListGroupsResponse, error) {
	groups, err := s.svc.ListGroups(ctx, req.GetCluster())
	if err != nil {
		return nil, err
	}
	return &kafkav1.ListGroupsResponse{Groups: groups}, nil
}

// DescribeGroup reports a group's state and members.
func (s *Server) DescribeGroup(ctx context.Context, req *kafkav1.DescribeGroupRequest) (*kafkav1.GroupDescription, error) {
	if err := required("group", req.GetGroup()); err != nil {
		return nil, err
	}
	info, err := s.svc.DescribeGroup(ctx, req.GetCluster(), req.GetGroup())
	if err != nil {
		return nil, err
	}
	d := &kafkav1.GroupDescription{
		Group:    info.Group,
		State:    info.State,
		Protocol: info.Protocol,
		Members:  make([]*kafkav1.GroupMember, len(info.Members)),
	}
	for i, m := range info.Members {
		gm := &kafkav1.GroupMember{
			MemberId:    m.MemberID,
			ClientId:    m.ClientID,
			ClientHost:  m.ClientHost,
			Assignments: make(map[string]*kafkav1.Partitions, len(m.Assigned)),
		}
		for topic, parts := range m.Assigned {
			gm.Assignments[topic] = &kafkav1.Partitions{Partitions: parts}
		}
		d.Members[i] = gm
	}
	return d, nil
}

// subKey names a group consuming a topic of a cluster.
type subKey struct{ cluster, group, topic string }

// subKey names the group and topic a request is for, with the
// default cluster spelled out, so "" and its name meet.
func (s *Server) subKey(cluster, group, topic string) subKey {
	if cluster == "" {
		cluster = s.defaultCluster
	}
	return subKey{cluster: cluster, group: group, topic: topic}
}

// streamErr is what a stream handler returns once ctx ended: the cause it
// was cancelled with, or the context's own error as a status.
func streamErr(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		return status.FromContextError(ctx.Err()).Err()
	}
	return cause
}
