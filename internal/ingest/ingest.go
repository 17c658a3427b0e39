// Package ingest runs Ferry's sources: each opens a server-streaming call
// (or polls a unary one) on a gRPC server and writes every response to a
// Kafka topic, reading from the call only as fast as Kafka acknowledges the
// records, and resuming after a restart from the cursor its newest record
// carries.
//
// Several Ferry instances share the sources through Kafka alone: each
// instance is a member of one consumer group that consumes one
// coordination topic per source (one partition, never written to), and a
// source runs on the member its topic's partition is assigned to. When a
// member leaves or dies, the group gives its partitions, and so its
// sources, to the others, which resume them from their topics.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Options configure a Manager.
type Options struct {
	// Config holds the sources and the ingest section.
	Config *config.Config
	// Registry holds the loaded protos.
	Registry *protoreg.Registry
	// Clusters returns the named cluster.
	Clusters func(name string) *kafka.Cluster
	// DialOptions returns options added to the gRPC client of a target.
	DialOptions func(target string) []grpc.DialOption
	// RecordContext is what records are produced with; it must outlast
	// Close's drain.
	RecordContext context.Context
	Logger        *slog.Logger
}

// Manager runs the sources this instance owns in the ingest group.
type Manager struct {
	cfg     config.Ingest
	cluster *kafka.Cluster
	logger  *slog.Logger
	// byTopic maps each coordination topic to its source.
	byTopic map[string]*source
	topics  []string
	group   *kgo.Client

	// mu guards running: the sources started here, by coordination topic.
	mu      sync.Mutex
	running map[string]*run
	closed  bool

	polling sync.WaitGroup
	stop    context.CancelFunc
}

// run is one source running: cancel stops it, done is closed once it has.
type run struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New compiles the sources and creates their gRPC clients (which connect
// when the sources first run). Nothing runs before Start.
func New(opts Options) (*Manager, error) {
	cfg := opts.Config
	m := &Manager{
		cfg:     cfg.Ingest,
		cluster: opts.Clusters(cfg.Ingest.Cluster),
		logger:  opts.Logger,
		byTopic: map[string]*source{},
		running: map[string]*run{},
	}
	for i, sc := range cfg.Sources {
		plan, err := Compile(cfg, i, opts.Registry)
		if err != nil {
			m.closeConns()
			return nil, err
		}
		s, err := newSource(plan, opts)
		if err != nil {
			m.closeConns()
			return nil, err
		}
		topic := cfg.Ingest.TopicPrefix + sc.Name
		m.byTopic[topic] = s
		m.topics = append(m.topics, topic)
	}
	sort.Strings(m.topics)
	return m, nil
}

func newSource(plan *Plan, opts Options) (*source, error) {
	sc := plan.cfg
	logger := opts.Logger.With("source", sc.Name)
	creds, tlsLog, err := backend.TransportCredentials(sc.TLS, "sources "+sc.Name+": tls", sc.Target, logger)
	if err != nil {
		return nil, err
	}
	md, err := sc.MetadataValues()
	if err != nil {
		return nil, fmt.Errorf("sources %s: %w", sc.Name, err)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frame.Codec{}), grpc.MaxCallRecvMsgSize(sc.MaxMessageSize)),
	}
	if sc.Keepalive.Time > 0 {
		dial = append(dial, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: sc.Keepalive.Time, Timeout: sc.Keepalive.Timeout, PermitWithoutStream: false}))
	}
	if opts.DialOptions != nil {
		dial = append(dial, opts.DialOptions(sc.Target)...)
	}
	conn, err := grpc.NewClient(sc.Target, dial...)
	if err != nil {
		return nil, fmt.Errorf("sources %s: creating gRPC client for %q: %w", sc.Name, sc.Target, err)
	}
	return &source{
		plan:      plan,
		cluster:   opts.Clusters(sc.Cluster),
		conn:      conn,
		tlsLog:    tlsLog,
		md:        metadata.New(md),
		logger:    logger,
		recordCtx: opts.RecordContext,
		state:     StateStandby,
		since:     time.Now(),
	}, nil
}

// Start creates the coordination topics that are missing and joins the
// ingest group; sources start as the group assigns them.
func (m *Manager) Start(ctx context.Context) error {
	if len(m.topics) == 0 {
		return nil
	}
	if err := m.createTopics(ctx); err != nil {
		return err
	}
	cl, err := m.cluster.NewGroupClient(m.cfg.GroupID, "",
		kgo.ConsumeTopics(m.topics...),
		kgo.SessionTimeout(m.cfg.SessionTimeout),
		kgo.HeartbeatInterval(max(m.cfg.SessionTimeout/5, 100*time.Millisecond)),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(5*time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, a map[string][]int32) { m.assigned(cl, a) }),
		kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, r map[string][]int32) {
			m.revoked(ctx, r, "moved to another instance")
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, _ *kgo.Client, r map[string][]int32) {
			m.revoked(ctx, r, "lost with the group session")
		}),
	)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	m.group = cl
	pctx, stop := context.WithCancel(context.Background())
	m.stop = stop
	m.polling.Add(1)
	go func() {
		defer m.polling.Done()
		// The coordination topics hold no records: polling only keeps
		// the member in its group and surfaces errors.
		for pctx.Err() == nil {
			fs := cl.PollFetches(pctx)
			if fs.IsClientClosed() {
				return
			}
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.Canceled) {
					m.logger.Warn("ingest group: reading a coordination topic failed", "topic", t, "err", err)
				}
			})
		}
	}()
	m.logger.Info("ingest: joining the group that shares the sources", "group", m.cfg.GroupID, "sources", len(m.topics))
	return nil
}

// createTopics creates the coordination topics that do not exist yet,
// with one partition and the broker's default replication.
func (m *Manager) createTopics(ctx context.Context) error {
	adm, err := m.cluster.Admin()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopics(ctx, 1, -1, nil, m.topics...)
	if err != nil {
		return fmt.Errorf("ingest: creating the coordination topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("ingest: creating coordination topic %s: %w (ingest.topic_prefix)", r.Topic, r.Err)
		}
	}
	// Each partition of a coordination topic runs its source once: a
	// topic made with more (by hand, or a broker default) would run it on
	// several instances at once.
	details, err := m.describeCreated(ctx, adm)
	if err != nil {
		return fmt.Errorf("ingest: describing the coordination topics: %w", err)
	}
	for _, d := range details.Sorted() {
		if n := len(d.Partitions); n != 1 {
			return fmt.Errorf("ingest: coordination topic %s has %d partitions, and must have 1 (each would run the source): delete it, or change ingest.topic_prefix", d.Topic, n)
		}
	}
	return nil
}

// describeCreated describes the coordination topics. A topic the
// controller has just created may not be in the metadata of the broker
// asked yet (a real broker answers UNKNOWN_TOPIC_OR_PARTITION for a
// moment), so that answer is asked again until ctx ends.
func (m *Manager) describeCreated(ctx context.Context, adm *kadm.Client) (kadm.TopicDetails, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		details, err := adm.ListTopics(ctx, m.topics...)
		if err == nil {
			err = details.Error()
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return details, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// assigned starts the sources of the topics the group gave this member.
func (m *Manager) assigned(cl *kgo.Client, a map[string][]int32) {
	_, gen := cl.GroupMetadata()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for topic := range a {
		s := m.byTopic[topic]
		if s == nil || m.running[topic] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &run{cancel: cancel, done: make(chan struct{})}
		m.running[topic] = r
		s.logger.Info("source assigned to this instance", "generation", gen)
		go func() {
			defer close(r.done)
			s.run(ctx, gen)
			if ctx.Err() != nil {
				s.setState(StateStandby, "")
			}
		}()
	}
}

// revoked stops the sources of the topics taken from this member, each
// waiting until Kafka answered for its records, up to the drain timeout,
// so that the next owner finds them in the topic.
func (m *Manager) revoked(ctx context.Context, r map[string][]int32, why string) {
	m.mu.Lock()
	var stopping []*run
	for topic := range r {
		if run := m.running[topic]; run != nil {
			delete(m.running, topic)
			run.cancel()
			stopping = append(stopping, run)
			m.byTopic[topic].logger.Info("source stops here: " + why)
		}
	}
	m.mu.Unlock()
	m.drain(ctx, stopping)
}

// drain waits for runs to end, up to the drain timeout or ctx's end.
func (m *Manager) drain(ctx context.Context, runs []*run) error {
	t := time.NewTimer(m.cfg.DrainTimeout)
	defer t.Stop()
	for _, r := range runs {
		select {
		case <-r.done:
		case <-t.C:
			return fmt.Errorf("ingest: sources still waiting for Kafka after the drain timeout (%s): their newest records may be written twice", m.cfg.DrainTimeout)
		case <-ctx.Done():
			return fmt.Errorf("ingest: stopped waiting for the sources: %w", ctx.Err())
		}
	}
	return nil
}

// Close stops every source, waits for Kafka to answer for their records
// (up to the drain timeout), and leaves the group.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var runs []*run
	for topic, r := range m.running {
		delete(m.running, topic)
		r.cancel()
		runs = append(runs, r)
	}
	m.mu.Unlock()
	err := m.drain(ctx, runs)
	if m.group != nil {
		m.stop()
		m.group.Close()
		m.polling.Wait()
	}
	m.closeConns()
	return err
}

func (m *Manager) closeConns() {
	for _, s := range m.byTopic {
		s.conn.Close()
	}
}

// Status returns every source's status, sorted by name.
func (m *Manager) Status() []Status {
	out := make([]Status, 0, len(m.byTopic))
	for _, topic := range m.topics {
		out = append(out, m.byTopic[topic].status())
	}
	return out
}
