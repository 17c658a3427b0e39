// Package kafka is the one place Ferry's configuration meets franz-go: it
// turns a cluster's settings into kgo options, owns every client Ferry
// keeps per cluster (the producers and one admin client), creates readers
// and consumer group members, lists offsets, classifies Kafka's errors
// into gRPC codes (see Code), and runs the embedded in-memory broker.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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

// Cluster is one Kafka cluster and every client Ferry keeps for it: the
// producers, one per acks mode in use (acks is a per-client setting in
// Kafka), and one admin client shared by everything that asks the cluster
// about topics, groups and offsets. Readers and consumer group members,
// which each need a client of their own, are created here too, so that
// every client of the cluster is built from the same options (baseOpts).
type Cluster struct {
	name   string
	cfg    config.Cluster
	seeds  []string
	logger *slog.Logger

	// producers is the current producer map. It is never changed, only
	// replaced, under mu, by a copy with a producer added (or by nil on
	// Close), so that the per-record path reads it without a lock.
	producers atomic.Pointer[map[producerKey]*kgo.Client]

	mu     sync.Mutex // guards admin and closed, and serializes replacing producers
	admin  *kgo.Client
	closed bool

	health health

	// security are the TLS and SASL options of every client, built by
	// NewCluster; securityErr is why they could not be, which Start
	// reports. saslCheck tests SASL's credentials before Start dials.
	security    []kgo.Opt
	securityErr error
	saslCheck   func(context.Context) error

	// hooks observe every client of the cluster (metrics); set before
	// Start by AddHooks.
	hooks []kgo.Hook
}

// AddHooks adds franz-go hooks to every client the cluster creates from
// now on. Call it before Start.
func (c *Cluster) AddHooks(hooks ...kgo.Hook) { c.hooks = append(c.hooks, hooks...) }

// NewCluster prepares a cluster; it connects on first use. seeds replaces
// the configured brokers when the cluster is served by the embedded broker.
func NewCluster(cfg config.Cluster, seeds []string, logger *slog.Logger) *Cluster {
	c := &Cluster{name: cfg.Name, cfg: cfg, seeds: seeds, logger: logger, health: health{up: true}}
	c.security, c.saslCheck, c.securityErr = securityOpts(cfg, logger)
	return c
}

// Name returns the cluster's configured name.
func (c *Cluster) Name() string { return c.name }

// Seeds returns the seed brokers Ferry connects to.
func (c *Cluster) Seeds() []string { return c.seeds }

// baseOpts are the options every client of this cluster shares: every
// client Ferry makes of a cluster starts from them, so they are the one
// place where the cluster's connection settings, TLS and SASL among them,
// become franz-go options.
func (c *Cluster) baseOpts() []kgo.Opt {
	return append([]kgo.Opt{
		kgo.SeedBrokers(c.seeds...),
		kgo.ClientID(c.cfg.ClientID),
		kgo.DialTimeout(c.cfg.DialTimeout),
		kgo.WithLogger(kslog.New(c.logger)),
		kgo.WithHooks(c.hooks...),
	}, c.security...)
}

// Producer returns the cluster's producer for acks, creating it on first
// use. Once the producer exists, Producer takes no lock, so callers may
// look it up for every record rather than keep it.
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

// loadProducers returns the current producer map, nil before the first
// producer and after Close. The map must not be changed.
func (c *Cluster) loadProducers() map[producerKey]*kgo.Client {
	if ps := c.producers.Load(); ps != nil {
		return *ps
	}
	return nil
}

// DeliveryTimeout is how long a record may take to be acknowledged.
func (c *Cluster) DeliveryTimeout() time.Duration { return c.cfg.Producer.DeliveryTimeout }

type producerKey struct {
	acks      Acks
	backdated bool
}

func (c *Cluster) producer(key producerKey) (*kgo.Client, error) {
	if p, ok := c.loadProducers()[key]; ok {
		return p, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cluster %q is closed", c.name)
	}
	if p, ok := c.loadProducers()[key]; ok {
		return p, nil // another caller created it meanwhile
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
	next := maps.Clone(c.loadProducers())
	if next == nil {
		next = map[producerKey]*kgo.Client{}
	}
	next[key] = cl
	c.producers.Store(&next)
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

// NewPartitionReader returns a client that reads the given partitions of
// topic from the given offsets, without a consumer group, waiting at most
// maxWait for records in a fetch.
func (c *Cluster) NewPartitionReader(topic string, from map[int32]int64, maxWait time.Duration, opts ...kgo.Opt) (*kgo.Client, error) {
	parts := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		parts[p] = kgo.NewOffset().At(o)
	}
	cl, err := kgo.NewClient(append(append(c.baseOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxWait(maxWait),
	), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating client for cluster %q: %w", c.name, err)
	}
	return cl, nil
}

// Start checks that the cluster answers a metadata request within its
// dial timeout, so that Ferry fails at start rather than on its first
// call. Clients connect on first use; Start leaves none behind.
func (c *Cluster) Start(ctx context.Context) error {
	if c.securityErr != nil {
		return fmt.Errorf("cluster %q: %w", c.name, c.securityErr)
	}
	if c.cfg.TLS.Enabled && c.cfg.TLS.InsecureSkipVerify {
		c.logger.Warn("TLS without checking the brokers' certificates (clusters[].tls.insecure_skip_verify): anyone between Ferry and Kafka can read and change the traffic", "cluster", c.name)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	if err := c.saslCheck(ctx); err != nil {
		return fmt.Errorf("cluster %q: %w", c.name, err)
	}
	cl, err := kgo.NewClient(c.baseOpts()...)
	if err != nil {
		return fmt.Errorf("creating client for cluster %q: %w", c.name, err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return c.startError(err)
	}
	return nil
}

// Close writes what the producers hold, within ctx, then stops the health
// check and closes every producer and the admin client. Callers stop
// handing records to the producers first. When ctx ends before every
// record was written, the records left are failed, and the error counts
// them. Close is safe to call more than once, and after a Start that
// failed.
func (c *Cluster) Close(ctx context.Context) error {
	err := c.flush(ctx)
	c.stopHealthCheck()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if ps := c.producers.Swap(nil); ps != nil {
		for _, p := range *ps {
			p.Close()
		}
	}
	if c.admin != nil {
		c.admin.Close()
		c.admin = nil
	}
	return err
}

// flush waits until every producer wrote the records it holds, or ctx
// ends; then it says how many records are left unwritten.
func (c *Cluster) flush(ctx context.Context) error {
	var errs []error
	ps := c.loadProducers()
	for _, p := range ps {
		if err := p.Flush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	var left int64
	for _, p := range ps {
		left += p.BufferedProduceRecords()
	}
	return fmt.Errorf("flushing the producers of cluster %q: %d records abandoned unwritten: %w", c.name, left, errors.Join(errs...))
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

// Admin returns the cluster's admin client, shared by everything in Ferry
// that lists topics, groups or offsets: a burst of callers must not become
// a burst of Kafka connections. It is created on first use and closed by
// Close.
func (c *Cluster) Admin() (*kadm.Client, error) {
	cl, err := c.adminClient()
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

func (c *Cluster) adminClient() (*kgo.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cluster %q is closed", c.name)
	}
	if c.admin == nil {
		cl, err := c.NewClient()
		if err != nil {
			return nil, err
		}
		c.admin = cl
	}
	return c.admin, nil
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
