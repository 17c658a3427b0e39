package kafkaapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/sparseacks"
)

// ListTopics lists the cluster's topics, sorted; internal ones (such as
// __consumer_offsets) only when internal is set.
func (s *Service) ListTopics(ctx context.Context, cluster string, internal bool) ([]string, error) {
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, err
	}
	// The shared client answers metadata requests from what it learned in
	// the last few seconds; a listing asked for by a person should show a
	// topic created a moment ago, so it goes to the broker.
	ctx = fresh(ctx)
	var tds kadm.TopicDetails
	if internal {
		tds, err = adm.ListTopicsWithInternal(ctx)
	} else {
		tds, err = adm.ListTopics(ctx)
	}
	if err != nil {
		return nil, kafkaErr(fmt.Sprintf("listing topics of cluster %q", c.Name()), err)
	}
	return s.visible(ctx, tds.Names()), nil
}

// DescribeTopic reports a topic's partitions and, with configs set, its
// configuration. An unknown topic is NOT_FOUND.
func (s *Service) DescribeTopic(ctx context.Context, cluster, topic string, configs bool) (TopicInfo, error) {
	if err := CheckTopic(topic); err != nil {
		return TopicInfo{}, err
	}
	if err := s.allowDescribe(ctx, topic); err != nil {
		return TopicInfo{}, err
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return TopicInfo{}, err
	}
	td, err := lookupTopic(ctx, adm, c, topic)
	if err != nil {
		return TopicInfo{}, err
	}
	info := TopicInfo{Topic: topic}
	for _, p := range td.Partitions.Sorted() {
		info.Partitions = append(info.Partitions, PartitionInfo{
			Partition: p.Partition,
			Leader:    p.Leader,
			// Kafka's order, kept: the first replica is the preferred
			// leader.
			Replicas: slices.Clone(p.Replicas),
			ISR:      slices.Clone(p.ISR),
		})
	}
	if !configs {
		return info, nil
	}
	what := fmt.Sprintf("describing the configuration of topic %q on cluster %q", topic, c.Name())
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return TopicInfo{}, kafkaErr(what, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		// Deleted since its metadata was read.
		return TopicInfo{}, topicNotFound(topic, c)
	}
	if err != nil {
		return TopicInfo{}, kafkaErr(what, err)
	}
	for _, e := range rc.Configs {
		// MaybeValue is "" for a sensitive entry, whose value Kafka
		// never sends.
		info.Configs = append(info.Configs, ConfigEntry{Name: e.Key, Value: e.MaybeValue(), Source: e.Source.String()})
	}
	slices.SortFunc(info.Configs, func(a, b ConfigEntry) int { return strings.Compare(a.Name, b.Name) })
	return info, nil
}

// ListGroups lists the cluster's consumer groups, sorted: those on the
// classic protocol and on KIP-848's, not share, streams or Kafka Connect
// groups.
func (s *Service) ListGroups(ctx context.Context, cluster string) ([]string, error) {
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, err
	}
	// A partial list (a broker not answering) would pass for a complete
	// one, so any error fails the call.
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, kafkaErr(fmt.Sprintf("listing groups of cluster %q", c.Name()), err)
	}
	var groups []string
	for _, g := range listed.Sorted() {
		if isConsumerGroup(g) {
			groups = append(groups, g.Group)
		}
	}
	return s.visible(ctx, groups), nil
}

// DescribeGroup reports a group's state and members with their assigned
// partitions. An unknown group is NOT_FOUND.
func (s *Service) DescribeGroup(ctx context.Context, cluster, group string) (GroupInfo, error) {
	if err := CheckGroup(group); err != nil {
		return GroupInfo{}, err
	}
	if err := s.allowDescribe(ctx, group); err != nil {
		return GroupInfo{}, err
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return GroupInfo{}, err
	}
	infos, err := describeGroups(ctx, adm, []string{group})
	if err != nil {
		return GroupInfo{}, kafkaErr(fmt.Sprintf("describing group %q on cluster %q", group, c.Name()), err)
	}
	info, ok := infos[group]
	if !ok {
		return GroupInfo{}, status.Errorf(codes.NotFound, "group %q not found on cluster %q", group, c.Name())
	}
	return info, nil
}

// TopicConsumers maps each group with members assigned partitions of topic
// (only group, when it is not empty) to those members and their partitions
// of the topic.
func (s *Service) TopicConsumers(ctx context.Context, cluster, topic, group string) (map[string]map[string][]int32, error) {
	if err := CheckTopic(topic); err != nil {
		return nil, err
	}
	if err := s.allowDescribe(ctx, topic); err != nil {
		return nil, err
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, err
	}
	if _, err := lookupTopic(ctx, adm, c, topic); err != nil {
		return nil, err
	}
	if group != "" {
		if err := s.allowDescribe(ctx, group); err != nil {
			return nil, err
		}
	}
	groups := []string{group}
	if group == "" {
		listed, err := adm.ListGroups(ctx)
		if err != nil {
			return nil, kafkaErr(fmt.Sprintf("listing groups of cluster %q", c.Name()), err)
		}
		groups = nil
		for _, g := range listed.Sorted() {
			if mayConsume(g) {
				groups = append(groups, g.Group)
			}
		}
		groups = s.visible(ctx, groups)
		if len(groups) == 0 {
			return map[string]map[string][]int32{}, nil
		}
	}
	infos, err := describeGroups(ctx, adm, groups)
	if err != nil {
		return nil, kafkaErr(fmt.Sprintf("describing the groups of cluster %q", c.Name()), err)
	}
	consumers := map[string]map[string][]int32{}
	for name, info := range infos {
		for _, m := range info.Members {
			ps := m.Assigned[topic]
			if len(ps) == 0 {
				continue
			}
			if consumers[name] == nil {
				consumers[name] = map[string][]int32{}
			}
			consumers[name][m.MemberID] = ps
		}
	}
	return consumers, nil
}

// isConsumerGroup reports whether a listed group is a consumer group, on
// the classic protocol or KIP-848's, as kafka-consumer-groups.sh counts
// them: not a share or streams group, nor a classic group of another
// protocol such as Kafka Connect's. Fields a broker leaves empty (older
// versions do not report them) do not exclude a group.
func isConsumerGroup(g kadm.ListedGroup) bool {
	switch g.GroupType {
	case "", "classic", "consumer":
	default:
		return false
	}
	return g.ProtocolType == "" || g.ProtocolType == "consumer"
}

// mayConsume reports whether a listed group can have members assigned
// partitions: a consumer group that is neither empty nor dead.
func mayConsume(g kadm.ListedGroup) bool {
	return isConsumerGroup(g) && g.State != "Empty" && g.State != "Dead"
}

// GetOffsets reports every partition of topic for group.
func (s *Service) GetOffsets(ctx context.Context, cluster, group, topic string) ([]PartitionOffsets, error) {
	adm, c, td, err := s.groupTopic(ctx, cluster, group, topic)
	if err != nil {
		return nil, err
	}
	on := fmt.Sprintf("of topic %q on cluster %q", topic, c.Name())
	marks, err := c.Watermarks(ctx, topic)
	if err != nil {
		return nil, kafkaErr("listing the offsets "+on, err)
	}
	commits, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		// Kafka answers an unknown group with no offsets, kfake with
		// this error; both mean nothing was committed.
		commits, err = nil, nil
	}
	if err != nil {
		return nil, kafkaErr(fmt.Sprintf("fetching the offsets of group %q %s", group, on), err)
	}

	offsets := make([]PartitionOffsets, 0, len(td.Partitions))
	for _, p := range td.Partitions.Numbers() {
		mark, ok := marks[p]
		if !ok {
			// The listings read metadata of their own, which may have
			// changed under a topic being recreated.
			return nil, status.Errorf(codes.Unavailable, "listing the offsets %s: partition %d missing from the answer", on, p)
		}
		po := PartitionOffsets{Partition: p, Begin: mark.Start, End: mark.End, Committed: -1}
		if cm, ok := commits.Lookup(topic, p); ok {
			if cm.Err != nil {
				return nil, kafkaErr(fmt.Sprintf("fetching the offset of group %q for partition %d %s", group, p, on), cm.Err)
			}
			if cm.At >= 0 {
				po.Committed, po.Metadata = cm.At, cm.Metadata
			}
		}
		if po.Committed >= 0 {
			po.Lag = po.End - po.Committed
			// Metadata that is not Kafka-Pixy's encoding (another
			// client's, or none) simply shows no sparse acks.
			if ranges, err := sparseacks.Decode(po.Committed, po.Metadata); err == nil {
				po.SparseAcks = sparseacks.Human(ranges)
			}
		} else {
			po.Lag = po.End - po.Begin
		}
		// A commit beyond the end (the topic was recreated, or an offset
		// set by hand) is no lag, not negative lag.
		po.Lag = max(po.Lag, 0)
		offsets = append(offsets, po)
	}
	return offsets, nil
}

// groupTopic checks the names of a group and a topic, and returns the
// cluster, its admin client and the topic's metadata; an unknown topic is
// NOT_FOUND.
func (s *Service) groupTopic(ctx context.Context, cluster, group, topic string) (*kadm.Client, *kafka.Cluster, kadm.TopicDetail, error) {
	if err := checkTopicGroup(topic, group); err != nil {
		return nil, nil, kadm.TopicDetail{}, err
	}
	if err := s.allowOffsets(ctx, group, topic); err != nil {
		return nil, nil, kadm.TopicDetail{}, err
	}
	adm, c, err := s.admin(cluster)
	if err != nil {
		return nil, nil, kadm.TopicDetail{}, err
	}
	td, err := lookupTopic(ctx, adm, c, topic)
	return adm, c, td, err
}

// lookupTopic returns topic's metadata; an unknown topic is NOT_FOUND.
func lookupTopic(ctx context.Context, adm *kadm.Client, c *kafka.Cluster, topic string) (kadm.TopicDetail, error) {
	if err := CheckTopic(topic); err != nil {
		return kadm.TopicDetail{}, err
	}
	td, err := topicMetadata(ctx, adm, topic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		// The shared client also remembers that a topic is unknown for
		// a few seconds. Asking the broker again finds a topic created
		// since (by a producer, say), and refreshes what the client
		// remembers for the offset listings that follow.
		td, err = topicMetadata(fresh(ctx), adm, topic)
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return kadm.TopicDetail{}, topicNotFound(topic, c)
	}
	if err != nil {
		return kadm.TopicDetail{}, kafkaErr(fmt.Sprintf("reading the metadata of topic %q on cluster %q", topic, c.Name()), err)
	}
	return td, nil
}

func topicMetadata(ctx context.Context, adm *kadm.Client, topic string) (kadm.TopicDetail, error) {
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return kadm.TopicDetail{}, err
	}
	td, ok := tds[topic]
	if !ok {
		return kadm.TopicDetail{}, kerr.UnknownTopicOrPartition
	}
	return td, td.Err
}

func topicNotFound(topic string, c *kafka.Cluster) error {
	return status.Errorf(codes.NotFound, "topic %q does not exist on cluster %q", topic, c.Name())
}

// fresh makes kadm's metadata requests bypass the client's metadata cache:
// kadm (v1.20) sends a request of its own, rather than asking the cache,
// when asked for authorized operations. The operations themselves are a
// few bytes, unused. TestAdminTopicCreatedAfterLookup fails should a kadm
// upgrade change this.
func fresh(ctx context.Context) context.Context { return kadm.WithAuthorizedOps(ctx) }

// describeGroups describes groups, leaving out those that do not exist.
// Groups on KIP-848's consumer protocol (Kafka 4 and later), which the
// classic DescribeGroups reports as not found, are described with
// ConsumerGroupDescribe.
func describeGroups(ctx context.Context, adm *kadm.Client, groups []string) (map[string]GroupInfo, error) {
	dgs, err := adm.DescribeGroups(ctx, groups...)
	if err != nil {
		return nil, err
	}
	infos := make(map[string]GroupInfo, len(groups))
	var others []string
	for _, name := range groups {
		dg, ok := dgs[name]
		switch {
		case !ok || errors.Is(dg.Err, kerr.GroupIDNotFound):
			others = append(others, name)
		case dg.Err != nil:
			return nil, fmt.Errorf("describing group %q: %w", name, dg.Err)
		case dg.State == "Dead" && len(dg.Members) == 0:
			// Before DescribeGroups v6 (Kafka 3.8), an unknown group
			// is Dead rather than an error.
		default:
			infos[name] = classicGroup(dg)
		}
	}
	if len(others) == 0 {
		return infos, nil
	}
	cgs, err := adm.DescribeConsumerGroups(ctx, others...)
	if err != nil {
		// Brokers before Kafka 4 do not know the request, nor such
		// groups; whatever the reason, the classic answer stands.
		return infos, nil
	}
	for _, name := range others {
		cg, ok := cgs[name]
		if !ok || cg.Err != nil || cg.State == "Dead" {
			continue
		}
		infos[name] = consumerGroup(cg)
	}
	return infos, nil
}

// classicGroup converts a group on the classic protocol, decoding the
// assignments of consumer groups.
func classicGroup(dg kadm.DescribedGroup) GroupInfo {
	info := GroupInfo{Group: dg.Group, State: dg.State, Protocol: dg.Protocol}
	for _, m := range dg.Members {
		mi := MemberInfo{MemberID: m.MemberID, ClientID: m.ClientID, ClientHost: m.ClientHost, Assigned: map[string][]int32{}}
		// Only consumer groups have assignments Kafka's way; others
		// (Kafka Connect, say) are members without partitions.
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				ps := append(mi.Assigned[t.Topic], t.Partitions...)
				slices.Sort(ps)
				mi.Assigned[t.Topic] = slices.Compact(ps)
			}
		}
		info.Members = append(info.Members, mi)
	}
	return info
}

// consumerGroup converts a group on KIP-848's consumer protocol; the
// broker's assignor stands in for the classic protocol name.
func consumerGroup(cg kadm.DescribedConsumerGroup) GroupInfo {
	info := GroupInfo{Group: cg.Group, State: cg.State, Protocol: cg.AssignorName}
	for _, m := range cg.Members {
		mi := MemberInfo{MemberID: m.MemberID, ClientID: m.ClientID, ClientHost: m.ClientHost, Assigned: map[string][]int32{}}
		for _, t := range m.Assignment.Sorted() {
			mi.Assigned[t.Topic] = t.Partitions
		}
		info.Members = append(info.Members, mi)
	}
	return info
}
