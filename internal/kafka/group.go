package kafka

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// NewGroupConsumer returns a client that consumes topic in consumer group
// group, as a static member when instanceID is set (see NewGroupClient). A
// group without committed offsets starts at the earliest or the latest
// record, as start says. extra carries the caller's group hooks.
func (c *Cluster) NewGroupConsumer(topic, group, instanceID, start string, session time.Duration, extra ...kgo.Opt) (*kgo.Client, error) {
	reset := kgo.NewOffset().AtStart()
	if start == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(reset),
		kgo.SessionTimeout(session),
		// Cooperative rebalancing moves only the partitions that change
		// owner, so the calls of every other partition keep running.
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.AllowAutoTopicCreation(),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	cl, err := c.NewGroupClient(group, instanceID, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("creating consumer of %q: %w", topic, err)
	}
	return cl, nil
}

// NewGroupClient returns a client of the cluster that is a member of
// consumer group group, with opts added to the cluster's own options.
//
// With instanceID set, the member is static (Kafka's group.instance.id,
// KIP-345): an instance restarted with the same id after a crash takes its
// old partitions back as soon as it rejoins, instead of waiting for the
// session timeout to end its dead predecessor's session. franz-go does not
// leave the group when a static member closes, so that a restart finds its
// place kept; the client sends the LeaveGroup itself once closed, so that
// an orderly shutdown still hands the partitions over at once. Only a
// crashed static member keeps its partitions, until it comes back or its
// session times out. Two live members with one id fence each other; that is
// logged as an error.
func (c *Cluster) NewGroupClient(group, instanceID string, opts ...kgo.Opt) (*kgo.Client, error) {
	all := append(c.baseOpts(), kgo.ConsumerGroup(group))
	if instanceID != "" {
		all = append(all, kgo.InstanceID(instanceID), kgo.WithHooks(&staticMember{c: c, group: group, id: instanceID}))
	}
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating member of group %q on cluster %q: %w", group, c.name, err)
	}
	return cl, nil
}

// MemberInstanceID is the group instance id of a member that consumes
// topic, made from an instance's configured id: an instance may have a
// member for each topic in one group, and each member needs an id of its
// own. An empty id stays empty (a dynamic member). The result keeps to
// Kafka's 249 characters: a topic too long for it is replaced by a hash.
func MemberInstanceID(id, topic string) string {
	if id == "" {
		return ""
	}
	if s := id + "." + topic; len(s) <= 249 {
		return s
	}
	sum := sha256.Sum256([]byte(topic))
	return id + "." + hex.EncodeToString(sum[:8])
}

// staticMember sends a static member's LeaveGroup once its client closed,
// and explains a fenced member.
type staticMember struct {
	c     *Cluster
	group string
	id    string
}

var (
	_ kgo.HookClientClosed     = (*staticMember)(nil)
	_ kgo.HookGroupManageError = (*staticMember)(nil)
)

// leaveTimeout bounds a static member's LeaveGroup at shutdown.
const leaveTimeout = 10 * time.Second

// OnClientClosed leaves the group by instance id. The closed client has
// already run its revoke hook (committing what it finished); a client of
// its own sends the request, since the closed one no longer can. The
// request names the member id too: Kafka then removes this member only,
// and answers FENCED_INSTANCE_ID when a newer member with the same
// instance id (a restart, a Kafka API member opened again while this one
// closed) has replaced it — leaving by instance id alone would remove the
// replacement.
func (s *staticMember) OnClientClosed(closed *kgo.Client) {
	memberID, _ := closed.GroupMetadata()
	if memberID == "" {
		return // never joined
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	cl, err := kgo.NewClient(s.c.baseOpts()...)
	if err == nil {
		defer cl.Close()
		req := kmsg.NewPtrLeaveGroupRequest()
		req.Group = s.group
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID, m.InstanceID = memberID, kmsg.StringPtr(s.id)
		m.Reason = kmsg.StringPtr("ferry is shutting down")
		req.Members = append(req.Members, m)
		var resp *kmsg.LeaveGroupResponse
		if resp, err = req.RequestWith(ctx, cl); err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			for _, mr := range resp.Members {
				if err == nil {
					err = kerr.ErrorForCode(mr.ErrorCode)
				}
			}
		}
	}
	switch {
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.FencedInstanceID):
		// Not in the group any more (franz-go left already), or replaced
		// by a newer member with this instance id, which stays.
	case err != nil:
		s.c.logger.Warn("leaving the consumer group; the partitions of this static member wait for its session to time out",
			"group", s.group, "group_instance_id", s.id, "err", err)
	default:
		s.c.logger.Debug("left the consumer group", "group", s.group, "group_instance_id", s.id)
	}
}

// OnGroupManageError explains FENCED_INSTANCE_ID, which franz-go retries
// like any other group error.
func (s *staticMember) OnGroupManageError(err error) {
	if errors.Is(err, kerr.FencedInstanceID) {
		s.c.logger.Error("another member of the consumer group has the same group instance id: give each instance its own group_instance_id",
			"group", s.group, "group_instance_id", s.id, "err", err)
	}
}
