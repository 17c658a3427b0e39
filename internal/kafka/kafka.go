// Package kafka is the one place Ferry's configuration meets franz-go: it
// turns a cluster's settings into kgo options, owns the producer clients,
// creates reply readers, and runs the embedded in-memory broker.
package kafka

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/ferryproxy/ferry/internal/config"
)

// Acks is how many replicas must store a record before it counts as
// written.
type Acks string

// The acks modes, named as in Ferry's (and Zilla's) configuration.
const (
	AcksNone           Acks = "none"
	AcksLeaderOnly     Acks = "leader_only"
	AcksInSyncReplicas Acks = "in_sync_replicas"
)

// Cluster is one Kafka cluster: its settings and the producers writing to
// it, one per acks mode in use (acks is a per-client setting in Kafka).
type Cluster struct {
	name   string
	cfg    config.Cluster
	seeds  []string
	logger *slog.Logger

	mu        sync.Mutex
	producers map[producerKey]*kgo.Client
	closed    bool

	health health
}

// NewCluster prepares a cluster; it connects on first use. seeds replaces
// the configured brokers when the cluster is served by the embedded broker.
func NewCluster(cfg config.Cluster, seeds []string, logger *slog.Logger) *Cluster {
	return &Cluster{name: cfg.Name, cfg: cfg, seeds: seeds, logger: logger, producers: map[producerKey]*kgo.Client{}, health: health{up: true}}
}

// Name returns the cluster's configured name.
func (c *Cluster) Name() string { return c.name }

// Seeds returns the seed brokers Ferry connects to.
func (c *Cluster) Seeds() []string { return c.seeds }

// baseOpts are the options every client of this cluster shares.
func (c *Cluster) baseOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(c.seeds...),
		kgo.ClientID(c.cfg.ClientID),
		kgo.DialTimeout(c.cfg.DialTimeout),
		kgo.WithLogger(kslog.New(c.logger)),
	}
}

// Producer returns the cluster's producer for acks, creating it on first
// use.
func (c *Cluster) Producer(acks Acks) (*kgo.Client, error) {
	return c.producer(producerKey{acks: acks})
}

// BackdatedProducer returns the cluster's producer for records whose own
// timestamp lies further back than the delivery timeout. franz-go measures
// a batch's delivery timeout from its first record's timestamp, so on the
// usual producer such a record fails at once, and fails the records
// batched with it. This producer bounds delivery by retries instead.
// Records written through it are not ordered with those of Producer.
func (c *Cluster) BackdatedProducer(acks Acks) (*kgo.Client, error) {
	return c.producer(producerKey{acks: acks, backdated: true})
}

// DeliveryTimeout is how long a record may take to be acknowledged.
func (c *Cluster) DeliveryTimeout() time.Duration { return c.cfg.Producer.DeliveryTimeout }

type producerKey struct {
	acks      Acks
	backdated bool
}

func (c *Cluster) producer(key producerKey) (*kgo.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cluster %q is closed", c.name)
	}
	if p, ok := c.producers[key]; ok {
		return p, nil
	}
	acks := key.acks
	p := c.cfg.Producer
	timeout := kgo.RecordDeliveryTimeout(p.DeliveryTimeout)
	if key.backdated {
		timeout = kgo.RecordDeliveryTimeout(0)
	}
	opts := append(c.baseOpts(),
		// Linger is set explicitly: franz-go's own default would hold every
		// record back, and a request/reply call pays it twice.
		kgo.ProducerLinger(p.Linger),
		kgo.MaxBufferedRecords(p.MaxBufferedRecords),
		timeout,
		kgo.ProducerBatchCompression(codec(p.Compression)),
		// Kafka's Java default partitioner (murmur2 of the key), so records
		// land where Java producers and Zilla would put them, unless the
		// record's context names a partition (see WithPartition).
		kgo.RecordPartitioner(explicitPartitioner{kgo.StickyKeyPartitioner(nil)}),
		kgo.AllowAutoTopicCreation(),
	)
	if p.BatchMaxBytes > 0 {
		// The batch limit follows the gRPC listener's message limit, so a
		// request the listener accepted is not refused here as too large.
		opts = append(opts, kgo.ProducerBatchMaxBytes(p.BatchMaxBytes))
	}
	switch acks {
	case AcksNone:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	case AcksLeaderOnly:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if key.backdated {
		// About as long as the delivery timeout allows, given franz-go's
		// backoff between attempts (up to a second).
		opts = append(opts, kgo.RecordRetries(max(3, int(p.DeliveryTimeout/time.Second))))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating producer for cluster %q: %w", c.name, err)
	}
	c.producers[key] = cl
	return cl, nil
}

// NewReader returns a client that reads topic from the first record at or
// after start, without a consumer group. Replies are routed by correlation
// id, so every Ferry instance reads the whole reply topic.
func (c *Cluster) NewReader(topic string, start time.Time) (*kgo.Client, error) {
	opts := append(c.baseOpts(),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(start.UnixMilli())),
		kgo.AllowAutoTopicCreation(),
		// A reply is usually one small record: fetch as soon as anything
		// is there, and never wait long on an idle topic.
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating reader of %q on cluster %q: %w", topic, c.name, err)
	}
	return cl, nil
}

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

// Ping checks that the cluster answers a metadata request.
func (c *Cluster) Ping(ctx context.Context) error {
	cl, err := kgo.NewClient(c.baseOpts()...)
	if err != nil {
		return fmt.Errorf("creating client for cluster %q: %w", c.name, err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("reaching cluster %q at %v: %w", c.name, c.seeds, err)
	}
	return nil
}

// Close flushes nothing: callers wait for their own records first. It
// stops the health check, closes every producer and is safe to call more
// than once.
func (c *Cluster) Close() {
	c.stopHealthCheck()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for acks, p := range c.producers {
		p.Close()
		delete(c.producers, acks)
	}
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	default:
		return kgo.NoCompression()
	}
}

// Embedded is the in-process broker that serves clusters with no brokers
// configured. It keeps every record in memory only.
type Embedded struct {
	c *kfake.Cluster
}

// EmbeddedOption configures the embedded broker.
type EmbeddedOption func(*embeddedOptions)

type embeddedOptions struct {
	logger *slog.Logger
	listen func(network, address string) (net.Listener, error)
}

// EmbeddedLogger sets the logger of the broker's own problems, such as
// failing to accept a connection.
func EmbeddedLogger(l *slog.Logger) EmbeddedOption {
	return func(o *embeddedOptions) { o.logger = l }
}

// StartEmbedded starts the in-memory broker on 127.0.0.1:port (0 picks a
// free port). Topics are created on first use with the given partitions.
func StartEmbedded(port, partitions int, opts ...EmbeddedOption) (*Embedded, error) {
	o := embeddedOptions{logger: slog.New(slog.DiscardHandler), listen: net.Listen}
	for _, opt := range opts {
		opt(&o)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
		kfake.ClusterID("ferry-embedded"),
		// kfake stops accepting at the first Accept error; the listener
		// retries instead, so the broker survives running out of file
		// descriptors for a moment.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			l, err := o.listen(network, address)
			if err != nil {
				return nil, err
			}
			return newRetryListener(l, o.logger), nil
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on 127.0.0.1:%d: %w", port, err)
	}
	return &Embedded{c: c}, nil
}

// Addrs returns the broker addresses, for Ferry's clients and for any
// outside client such as kcat.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Close stops the broker; its records are gone.
func (e *Embedded) Close() { e.c.Close() }

// Flush waits until every producer wrote the records it holds, or ctx ends.
func (c *Cluster) Flush(ctx context.Context) error {
	c.mu.Lock()
	ps := make([]*kgo.Client, 0, len(c.producers))
	for _, p := range c.producers {
		ps = append(ps, p)
	}
	c.mu.Unlock()
	for _, p := range ps {
		if err := p.Flush(ctx); err != nil {
			return fmt.Errorf("flushing producer of cluster %q: %w", c.name, err)
		}
	}
	return nil
}

// NewClient returns a client of the cluster with the given options added
// to the cluster's own.
func (c *Cluster) NewClient(opts ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(c.baseOpts(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating client for cluster %q: %w", c.name, err)
	}
	return cl, nil
}

// partitionKey is the context key of a record's explicit partition.
type partitionKey struct{}

// WithPartition returns a context that makes the producers write a record
// produced with it to partition p instead of the one its key picks. A
// partition the topic does not have fails the record.
func WithPartition(ctx context.Context, p int32) context.Context {
	return context.WithValue(ctx, partitionKey{}, p)
}

// explicitPartitioner is franz-go's key partitioner, overridden by a
// partition the record's context names.
type explicitPartitioner struct{ kgo.Partitioner }

func (e explicitPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &explicitTopicPartitioner{e.Partitioner.ForTopic(topic)}
}

type explicitTopicPartitioner struct{ kgo.TopicPartitioner }

func explicit(r *kgo.Record) (int32, bool) {
	if r.Context == nil {
		return 0, false
	}
	p, ok := r.Context.Value(partitionKey{}).(int32)
	return p, ok
}

// RequiresConsistency is true for an explicit partition: franz-go then
// chooses among all partitions, so the index returned is the partition.
func (t *explicitTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	if _, ok := explicit(r); ok {
		return true
	}
	return t.TopicPartitioner.RequiresConsistency(r)
}

func (t *explicitTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if p, ok := explicit(r); ok {
		return int(p)
	}
	return t.TopicPartitioner.Partition(r, n)
}

// OnNewBatch keeps the sticky partitioning of records without a key.
func (t *explicitTopicPartitioner) OnNewBatch() {
	if o, ok := t.TopicPartitioner.(kgo.TopicPartitionerOnNewBatch); ok {
		o.OnNewBatch()
	}
}

// FetchErrorAttrs returns the log attributes that place an error of a poll
// (kgo.Fetches.EachError): the topic and partition for a partition's
// error, the topic alone for a whole topic's (partition -1), and nothing
// for the client's own errors, such as a failed group session or a closed
// client, which franz-go reports under topic "" and partition 0 or -1.
// Every poll loop logs its errors with it, so that a connection error is
// not logged as if partition 0 of topic "" had failed.
func FetchErrorAttrs(topic string, partition int32) []any {
	switch {
	case topic == "":
		return nil
	case partition < 0:
		return []any{"topic", topic}
	default:
		return []any{"topic", topic, "partition", partition}
	}
}
