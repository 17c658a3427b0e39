// Package kafkaapi is the engine of Ferry's generic Kafka API: producing,
// consuming in consumer groups with acknowledgements (at least once, with
// Kafka-Pixy's sparse-ack commit metadata), offsets and admin. The gRPC and
// REST faces (Ferry's own and Kafka-Pixy's) translate their requests into
// calls on a Service; every error it returns carries a gRPC status
// (GRPCStatus), and its cause where it has one.
package kafkaapi

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
)

// Service serves the Kafka API over a set of clusters.
type Service struct {
	// cfg is the configuration in force; SetConfig replaces it.
	cfg      atomic.Pointer[config.KafkaAPI]
	clusters map[string]*kafka.Cluster
	names    []string // configured order; names[0] is the default
	logger   *slog.Logger

	ctx context.Context // cancelled by Close; parent of every member

	cancel context.CancelFunc
	// givenUp ends when Close stops waiting for members to commit: their
	// last commits are cancelled, so they leave at once.
	givenUp context.Context
	giveUp  context.CancelFunc

	mu      sync.Mutex
	members map[memberKey]*member
	// live counts the members started and not yet ended, those leaving
	// included: each holds a Kafka client and its connections until it
	// ended, so this is what kafka_api.consume.max_group_members bounds.
	live   int
	closed bool

	closeOnce sync.Once
	closeErr  error

	wg sync.WaitGroup // every member's goroutines

	// counts are the members' counters by configured cluster, made by
	// New and read-only after.
	counts map[string]*counts

	// policy decides what callers may do; nil (or a holder of nil)
	// allows everything. SetPolicy replaces it while calls run.
	policy atomic.Pointer[policyHolder]

	// memberOpts are added to every member's client options: a seam for
	// tests, which cut a member off its brokers with a dialer of theirs.
	memberOpts []kgo.Opt
}

// New returns a Service over clusters; names lists them in configured order,
// the first being the default.
func New(cfg config.KafkaAPI, clusters map[string]*kafka.Cluster, names []string, logger *slog.Logger) *Service {
	s := &Service{
		clusters: clusters,
		names:    names,
		logger:   logger.With("component", "kafka-api"),
		members:  map[memberKey]*member{},
		counts:   newCounts(names),
	}
	s.cfg.Store(&cfg)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.givenUp, s.giveUp = context.WithCancel(context.Background())
	return s
}

// Config returns the configuration in force. It must not be changed.
func (s *Service) Config() *config.KafkaAPI { return s.cfg.Load() }

// SetConfig puts cfg in force while calls run (a reload): produce and
// poll settings apply to the calls that start after it, consume settings
// to the group members that join after it; running members keep theirs
// until they leave (when idle for kafka_api.consume.subscription_timeout,
// or as Ferry stops).
func (s *Service) SetConfig(cfg config.KafkaAPI) { s.cfg.Store(&cfg) }

// Policy decides which callers may use which topics and groups. Its
// errors carry the PERMISSION_DENIED status the faces answer with. The
// caller is known from the call's context (auth.FromContext).
type Policy interface {
	// Produce allows producing to topic.
	Produce(ctx context.Context, topic string) error
	// Consume allows consuming topic in group and acknowledging.
	Consume(ctx context.Context, group, topic string) error
	// Offsets allows reading and setting group's offsets on topic.
	Offsets(ctx context.Context, group, topic string) error
	// Describe allows describing a topic or group.
	Describe(ctx context.Context, name string) error
	// Visible reports whether a topic or group may be listed.
	Visible(ctx context.Context, name string) bool
}

// SetPolicy makes the service check every operation against p from now
// on; nil allows everything, as before any SetPolicy. It is safe while
// calls run: an operation checks the policy of the moment it starts.
func (s *Service) SetPolicy(p Policy) { s.policy.Store(&policyHolder{p}) }

// policyHolder holds a Policy for an atomic pointer.
type policyHolder struct{ Policy }

// currentPolicy returns the policy in force, nil for none.
func (s *Service) currentPolicy() Policy {
	if h := s.policy.Load(); h != nil {
		return h.Policy
	}
	return nil
}

// Members returns how many consumer group members the Kafka API runs,
// those leaving included.
func (s *Service) Members() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Clusters returns the configured cluster names, the default first.
func (s *Service) Clusters() []string { return append([]string(nil), s.names...) }

// cluster resolves a cluster name; empty is the default cluster.
func (s *Service) cluster(name string) (*kafka.Cluster, error) {
	if name == "" {
		name = s.names[0]
	}
	c, ok := s.clusters[name]
	if !ok {
		known := append([]string(nil), s.names...)
		sort.Strings(known)
		return nil, errorf(codes.InvalidArgument, "unknown cluster %q: configured clusters are %q", name, known)
	}
	return c, nil
}

// admin returns the cluster's shared admin client (see kafka.Cluster.Admin).
func (s *Service) admin(name string) (*kadm.Client, *kafka.Cluster, error) {
	c, err := s.cluster(name)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, closing("Ferry is shutting down")
	}
	adm, err := c.Admin()
	if err != nil {
		return nil, nil, kafkaErr("reaching cluster "+strconv.Quote(c.Name()), err)
	}
	return adm, c, nil
}

// Close leaves every consumer group after committing what was
// acknowledged; messages delivered but not acknowledged are redelivered by
// the groups' next members. The clusters' clients are theirs to close
// (kafka.Cluster.Close). When ctx ends first, the members still leaving
// stop committing and leave at once: what they had acknowledged and not
// committed is delivered again too, and the error counts them. Close is
// safe to call more than once.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Service) close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	members := make([]*member, 0, len(s.members))
	for _, m := range s.members {
		members = append(members, m)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	var leaving atomic.Int64
	leaving.Store(int64(len(members)))
	for _, m := range members {
		wg.Go(func() {
			defer leaving.Add(-1)
			m.close()
		})
	}
	left := make(chan struct{})
	go func() {
		wg.Wait()
		s.cancel()
		s.wg.Wait() // members retired while idle, too
		close(left)
	}()
	var err error
	select {
	case <-left:
	case <-ctx.Done():
		err = fmt.Errorf("%d consumer group members left without committing what was acknowledged, which their groups deliver again: %w", leaving.Load(), ctx.Err())
		s.giveUp()
		<-left
	}
	s.giveUp()
	return err
}

// kafkaErr is an error from franz-go as the caller gets it: "what: err"
// with the gRPC code kafka.Code gives err. One that is a gRPC status
// already is kept.
func kafkaErr(what string, err error) error { return kafka.Wrap(what, err) }
