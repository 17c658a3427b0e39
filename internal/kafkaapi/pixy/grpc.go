// Package pixy serves Kafka-Pixy's gRPC service and REST paths over Ferry's
// Kafka API engine, so that Kafka-Pixy clients move to Ferry by changing an
// address. It translates requests and answers only: consumer groups, acks
// and offsets are the engine's (package kafkaapi), whose errors are gRPC
// statuses already. Where Kafka-Pixy had bugs (see the Kafka-Pixy
// compatibility spec) Ferry does what Kafka-Pixy documented, not what it did.
package pixy

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/api/kafkapixy"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/sparseacks"
)

// MaxRequestSize is the largest request Kafka-Pixy accepts, on gRPC and
// REST alike; clients written against it never send more.
const MaxRequestSize = 1 << 20

// topicConfigVersion is the version Kafka-Pixy reported for every topic
// configuration: that of the ZooKeeper node it read it from.
const topicConfigVersion = 1

// describeConcurrency bounds the DescribeTopic calls one ListTopics runs at
// once, so a cluster with thousands of topics is not asked everything at
// the same moment.
const describeConcurrency = 8

// errLongPollTimeout is returned when a poll found no message in time. It is
// Kafka-Pixy's answer (NOT_FOUND with its text); the REST face recognises
// this very value to answer 408 rather than the 404 of an unknown topic.
var errLongPollTimeout = status.Error(codes.NotFound, "long polling timeout")

// Server implements Kafka-Pixy's KafkaPixy gRPC service over a
// kafkaapi.Service. It holds no state of its own beyond configuration, so
// it needs no closing: the Service owns the groups and clients.
type Server struct {
	kafkapixy.UnimplementedKafkaPixyServer

	svc    *kafkaapi.Service
	logger *slog.Logger
}

var _ kafkapixy.KafkaPixyServer = (*Server)(nil)

// NewServer returns a Server answering from svc.
func NewServer(svc *kafkaapi.Service, logger *slog.Logger) *Server {
	return &Server{svc: svc, logger: logger.With("component", "kafka-pixy")}
}

// required reports a missing request field as INVALID_ARGUMENT naming it.
func required(field, value string) error {
	if value == "" {
		return status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	return nil
}

// Produce writes a message. Kafka-Pixy's key_undefined means no key (the
// partitioner spreads such messages); otherwise key_value is the key even
// when it is empty, which hashes to one fixed partition.
func (s *Server) Produce(ctx context.Context, rq *kafkapixy.ProdRq) (*kafkapixy.ProdRs, error) {
	rs, err := s.produce(ctx, rq)
	return rs, produceCode(err)
}

// produceCode gives a produce error Kafka-Pixy's gRPC code: it answered an
// unknown topic with INVALID_ARGUMENT, where the engine (and the REST face,
// as Kafka-Pixy's 404) says NOT_FOUND.
func produceCode(err error) error {
	if status.Code(err) == codes.NotFound {
		return status.Error(codes.InvalidArgument, status.Convert(err).Message())
	}
	return err
}

// produce is Produce with the engine's error codes, for both faces.
func (s *Server) produce(ctx context.Context, rq *kafkapixy.ProdRq) (*kafkapixy.ProdRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	rec := kafkaapi.Record{
		Partition: -1,
		// Kafka-Pixy never wrote a null value: an empty message is an
		// empty value.
		Value: rq.GetMessage(),
	}
	if rec.Value == nil {
		rec.Value = []byte{}
	}
	if !rq.GetKeyUndefined() {
		// An empty bytes field arrives as nil; the key is still defined.
		rec.Key = rq.GetKeyValue()
		if rec.Key == nil {
			rec.Key = []byte{}
		}
	}
	for _, h := range rq.GetHeaders() {
		if h == nil {
			continue
		}
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.GetKey(), Value: h.GetValue()})
	}
	if !rq.GetAsyncMode() {
		res, err := s.svc.Produce(ctx, rq.GetCluster(), rq.GetTopic(), rec)
		if err != nil {
			return nil, err
		}
		return &kafkapixy.ProdRs{Partition: res.Partition, Offset: res.Offset}, nil
	}
	if err := s.svc.ProduceDetached(ctx, rq.GetCluster(), rq.GetTopic(), rec); err != nil {
		return nil, err
	}
	return &kafkapixy.ProdRs{Partition: -1, Offset: -1}, nil
}

// ackMode is what a poll acknowledges before or after it takes a message.
type ackMode int

const (
	// ackNone acknowledges nothing.
	ackNone ackMode = iota
	// ackAuto acknowledges the message the poll returns (at most once).
	ackAuto
	// ackExplicit acknowledges an earlier message before polling.
	ackExplicit
)

// ack is a poll's acknowledgement request.
type ack struct {
	mode      ackMode
	partition int32
	offset    int64
}

// ConsumeNAck acknowledges as asked, then long-polls one message of topic as
// a member of group.
//
// Kafka-Pixy acknowledged partition 0 offset 0 when a request set no ack
// flag and left both ack fields at zero, which is what a client that forgot
// no_ack on its first call sends, and it could take away a message another
// client was still processing. Ferry takes such a request as acknowledging
// nothing. The price is small and safe: a client that really meant to
// acknowledge partition 0 offset 0 by piggy-backing gets that one message
// again after the ack timeout (at least once holds); the Ack call or
// auto_ack acknowledge it without ambiguity.
func (s *Server) ConsumeNAck(ctx context.Context, rq *kafkapixy.ConsNAckRq) (*kafkapixy.ConsRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	if err := required("group", rq.GetGroup()); err != nil {
		return nil, err
	}
	var a ack
	switch {
	case rq.GetNoAck():
		a.mode = ackNone
	case rq.GetAutoAck():
		a.mode = ackAuto
	case rq.GetAckPartition() == 0 && rq.GetAckOffset() == 0:
		a.mode = ackNone
	default:
		if rq.GetAckPartition() < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "ack_partition %d is negative", rq.GetAckPartition())
		}
		if rq.GetAckOffset() < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "ack_offset %d is negative", rq.GetAckOffset())
		}
		a = ack{mode: ackExplicit, partition: rq.GetAckPartition(), offset: rq.GetAckOffset()}
	}
	msg, err := s.consume(ctx, rq.GetCluster(), rq.GetGroup(), rq.GetTopic(), a)
	if err != nil {
		return nil, err
	}
	rs := &kafkapixy.ConsRs{
		Partition:    msg.Partition,
		Offset:       msg.Offset,
		KeyValue:     msg.Key,
		KeyUndefined: msg.Key == nil,
		Message:      msg.Value,
	}
	for _, h := range msg.Headers {
		rs.Headers = append(rs.Headers, &kafkapixy.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return rs, nil
}

// consume is ConsumeNAck for both faces: the REST face states its ack
// explicitly and so bypasses the gRPC face's reading of all-zero fields.
//
// The acknowledgement is applied before polling and its errors returned,
// where Kafka-Pixy sent it off and never said whether it worked. One error
// is not returned: FAILED_PRECONDITION, an ack for a partition this
// instance no longer owns. The message is then redelivered by its new
// owner, so nothing is lost, and a Kafka-Pixy client, which passes the last
// message's ack on every poll and gives up on any error but NOT_FOUND,
// would otherwise stop at every rebalance.
func (s *Server) consume(ctx context.Context, cluster, group, topic string, a ack) (*kafkaapi.Message, error) {
	ss, err := s.svc.Open(ctx, cluster, group, topic)
	if err != nil {
		return nil, err
	}
	// A delivered message waits for its ack (or the ack timeout), since a
	// Kafka-Pixy client acknowledges it on a later request.
	defer ss.Close(false)
	if a.mode == ackExplicit {
		if f := ss.AckAll(ctx, []kafkaapi.Ref{{Partition: a.partition, Offset: a.offset}}); len(f) > 0 {
			err := f[0].Err
			if status.Code(err) != codes.FailedPrecondition {
				return nil, err
			}
			s.logger.Info("ignoring ack of a partition this instance does not own",
				"group", group, "topic", topic, "partition", a.partition, "offset", a.offset, "error", err)
		}
	}
	pollCtx, cancel := context.WithTimeout(ctx, s.svc.Config().Consume.LongPollTimeout)
	defer cancel()
	msg, err := ss.Next(pollCtx)
	if err != nil {
		// Only our own timer is Kafka-Pixy's long-poll timeout; a client
		// that gave up or ran out of time gets its own context's error.
		if pollCtx.Err() != nil && ctx.Err() == nil {
			return nil, errLongPollTimeout
		}
		return nil, err
	}
	// The message is handed to the client as this returns: its delivery
	// span ends here.
	kafkaapi.EndDeliveries(kafkaapi.TraceDeliveries(ctx, group, 1, func(int) *kafkaapi.Message { return msg }), nil)
	if a.mode == ackAuto {
		// The client gets the message even if this ack fails: it is then
		// delivered again after the ack timeout, which loses nothing.
		if f := ss.AckAll(ctx, []kafkaapi.Ref{{Partition: msg.Partition, Offset: msg.Offset}}); len(f) > 0 {
			s.logger.Warn("auto-acknowledging", "group", group, "topic", topic,
				"partition", msg.Partition, "offset", msg.Offset, "error", f[0].Err)
		}
	}
	return msg, nil
}

// Ack acknowledges a consumed message.
func (s *Server) Ack(ctx context.Context, rq *kafkapixy.AckRq) (*kafkapixy.AckRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	if err := required("group", rq.GetGroup()); err != nil {
		return nil, err
	}
	if rq.GetPartition() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "partition %d is negative", rq.GetPartition())
	}
	if rq.GetOffset() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "offset %d is negative", rq.GetOffset())
	}
	if err := s.svc.Ack(ctx, rq.GetCluster(), rq.GetGroup(), rq.GetTopic(), rq.GetPartition(), rq.GetOffset()); err != nil {
		return nil, err
	}
	return &kafkapixy.AckRs{}, nil
}

// GetOffsets reports, per partition of topic, the log's bounds and group's
// committed offset, with the acknowledgements beyond it.
func (s *Server) GetOffsets(ctx context.Context, rq *kafkapixy.GetOffsetsRq) (*kafkapixy.GetOffsetsRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	if err := required("group", rq.GetGroup()); err != nil {
		return nil, err
	}
	pos, err := s.svc.GetOffsets(ctx, rq.GetCluster(), rq.GetGroup(), rq.GetTopic())
	if err != nil {
		return nil, err
	}
	rs := &kafkapixy.GetOffsetsRs{Offsets: make([]*kafkapixy.PartitionOffset, 0, len(pos))}
	for _, po := range pos {
		rs.Offsets = append(rs.Offsets, &kafkapixy.PartitionOffset{
			Partition:  po.Partition,
			Begin:      po.Begin,
			End:        po.End,
			Count:      po.End - po.Begin,
			Offset:     po.Committed,
			Lag:        po.Lag,
			Metadata:   po.Metadata,
			SparseAcks: pixySparseAcks(po.Committed, po.Metadata),
		})
	}
	return rs, nil
}

// SetOffsets commits offsets for group. Unlike Kafka-Pixy, whose members
// already consuming ignored them, the engine applies them to running
// members at once.
func (s *Server) SetOffsets(ctx context.Context, rq *kafkapixy.SetOffsetsRq) (*kafkapixy.SetOffsetsRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	if err := required("group", rq.GetGroup()); err != nil {
		return nil, err
	}
	targets := make([]kafkaapi.OffsetTarget, 0, len(rq.GetOffsets()))
	for _, po := range rq.GetOffsets() {
		if po == nil {
			continue
		}
		targets = append(targets, kafkaapi.OffsetTarget{Partition: po.GetPartition(), Offset: po.GetOffset(), Metadata: po.GetMetadata()})
	}
	if len(targets) == 0 {
		// Kafka-Pixy committed nothing and said so with success.
		return &kafkapixy.SetOffsetsRs{}, nil
	}
	if _, err := s.svc.SetOffsets(ctx, rq.GetCluster(), rq.GetGroup(), rq.GetTopic(), targets); err != nil {
		return nil, err
	}
	return &kafkapixy.SetOffsetsRs{}, nil
}

// ListTopics lists the cluster's topics with their configuration, and their
// partitions when asked. Internal topics such as __consumer_offsets are left
// out: they are Kafka's bookkeeping, not something to produce to.
func (s *Server) ListTopics(ctx context.Context, rq *kafkapixy.ListTopicRq) (*kafkapixy.ListTopicRs, error) {
	topics, err := s.listTopics(ctx, rq.GetCluster(), rq.GetWithPartitions(), true)
	if err != nil {
		return nil, err
	}
	return &kafkapixy.ListTopicRs{Topics: topics}, nil
}

// listTopics describes every topic of cluster. It asks for nothing beyond
// the names unless partitions or configuration are wanted, since each of
// those costs an admin request per topic.
func (s *Server) listTopics(ctx context.Context, cluster string, withPartitions, withConfig bool) (map[string]*kafkapixy.GetTopicMetadataRs, error) {
	names, err := s.svc.ListTopics(ctx, cluster, false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*kafkapixy.GetTopicMetadataRs, len(names))
	if !withPartitions && !withConfig {
		for _, name := range names {
			out[name] = &kafkapixy.GetTopicMetadataRs{}
		}
		return out, nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	infos := make([]*kafkapixy.GetTopicMetadataRs, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, describeConcurrency)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ti, err := s.svc.DescribeTopic(ctx, cluster, name, withConfig)
			if err != nil {
				errs[i] = err
				// A topic deleted since it was listed is left out; any
				// other failure ends the listing.
				if status.Code(err) != codes.NotFound {
					cancel()
				}
				return
			}
			infos[i] = topicMetadata(ti, withPartitions, withConfig)
		}()
	}
	wg.Wait()
	for i, name := range names {
		switch {
		case errs[i] == nil:
			out[name] = infos[i]
		case status.Code(errs[i]) != codes.NotFound:
			return nil, firstCause(errs)
		}
	}
	return out, nil
}

// firstCause returns the first error that is not a cancellation caused by
// another one, so a listing reports why it failed rather than that it was
// cancelled.
func firstCause(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil || status.Code(err) == codes.NotFound {
			continue
		}
		if status.Code(err) != codes.Canceled {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// ListConsumers maps the groups with members consuming topic (only group,
// when given) to those members and their partitions of it.
func (s *Server) ListConsumers(ctx context.Context, rq *kafkapixy.ListConsumersRq) (*kafkapixy.ListConsumersRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	groups, err := s.svc.TopicConsumers(ctx, rq.GetCluster(), rq.GetTopic(), rq.GetGroup())
	if err != nil {
		return nil, err
	}
	rs := &kafkapixy.ListConsumersRs{Groups: make(map[string]*kafkapixy.ConsumerGroups, len(groups))}
	for group, members := range groups {
		cg := &kafkapixy.ConsumerGroups{Consumers: make(map[string]*kafkapixy.ConsumerPartitions, len(members))}
		for member, partitions := range members {
			cg.Consumers[member] = &kafkapixy.ConsumerPartitions{Partitions: partitions}
		}
		rs.Groups[group] = cg
	}
	return rs, nil
}

// GetTopicMetadata reports a topic's configuration and, when asked, its
// partitions. An unknown topic is NOT_FOUND.
func (s *Server) GetTopicMetadata(ctx context.Context, rq *kafkapixy.GetTopicMetadataRq) (*kafkapixy.GetTopicMetadataRs, error) {
	if err := required("topic", rq.GetTopic()); err != nil {
		return nil, err
	}
	ti, err := s.svc.DescribeTopic(ctx, rq.GetCluster(), rq.GetTopic(), true)
	if err != nil {
		return nil, err
	}
	return topicMetadata(ti, rq.GetWithPartitions(), true), nil
}

// topicMetadata is Kafka-Pixy's view of a topic. Its configuration was the
// topic's overrides as stored in ZooKeeper, so only values set on the topic
// itself (DYNAMIC_TOPIC_CONFIG) appear, not broker or default ones.
func topicMetadata(ti kafkaapi.TopicInfo, withPartitions, withConfig bool) *kafkapixy.GetTopicMetadataRs {
	rs := &kafkapixy.GetTopicMetadataRs{}
	if withConfig {
		rs.Version = topicConfigVersion
		rs.Config = map[string]string{}
		for _, c := range ti.Configs {
			if c.Source == "DYNAMIC_TOPIC_CONFIG" {
				rs.Config[c.Name] = c.Value
			}
		}
	}
	if withPartitions {
		rs.Partitions = make([]*kafkapixy.PartitionMetadata, 0, len(ti.Partitions))
		for _, p := range ti.Partitions {
			rs.Partitions = append(rs.Partitions, &kafkapixy.PartitionMetadata{
				Partition: p.Partition,
				Leader:    p.Leader,
				Replicas:  p.Replicas,
				Isr:       p.ISR,
			})
		}
		sort.Slice(rs.Partitions, func(i, j int) bool { return rs.Partitions[i].Partition < rs.Partitions[j].Partition })
	}
	return rs
}

// pixySparseAcks shows the acknowledged offsets beyond the committed one
// as Kafka-Pixy did: relative to the committed offset ("1-2" is the offset
// right after it). Ferry's own API shows them as offsets.
func pixySparseAcks(committed int64, metadata string) string {
	ranges, err := sparseacks.Decode(committed, metadata)
	if err != nil {
		return ""
	}
	return sparseacks.Human(sparseacks.Relative(committed, ranges))
}
