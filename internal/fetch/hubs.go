package fetch

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
)

// Options configure Hubs.
type Options struct {
	// Clusters returns the named cluster.
	Clusters func(name string) Cluster
	// CacheMaxBytes and CacheMaxAge bound each hub's cache of recent
	// records (fetch.cache); CacheMaxAge 0 is no age bound.
	CacheMaxBytes int64
	CacheMaxAge   time.Duration
	// MaxCatchUps bounds the catch-up readers running at once; CatchUpWait
	// is how long a caller waits for one before RESOURCE_EXHAUSTED.
	MaxCatchUps int
	CatchUpWait time.Duration
	// CatchUpWindow bounds what one catch-up reader keeps for its
	// callers (see train).
	CatchUpWindow int64
	// PartitionRefresh is how often a hub looks for partitions its topic
	// gained; 0 never.
	PartitionRefresh time.Duration
	Logger           *slog.Logger
}

// Hubs owns the hubs of this Ferry instance, one per (cluster, topic,
// message id field, meta prefix), started by their first subscriber (or
// at start, pre-warmed) and stopped when their last subscriber leaves
// (never, pre-warmed).
type Hubs struct {
	clusters    func(name string) Cluster
	hub         hubConfig
	catchUpWait time.Duration
	logger      *slog.Logger
	// catchUpSlots holds a token per running catch-up reader: each is a
	// Kafka client with connections of its own, and a burst of callers
	// from behind must not run the process out of file descriptors.
	// Callers waiting for one look again every boardPoll (Route.board),
	// in no order.
	catchUpSlots chan struct{}
	// ctx ends the pre-warming at Close.
	ctx    context.Context
	cancel context.CancelFunc
	warm   sync.WaitGroup

	mu   sync.Mutex
	hubs map[hubKey]*hubRef
	// warmed are the hubs pre-warmed, each holding a reference of its own.
	warmed map[hubKey]bool

	counts counts
}

// counts are what the hubs did since Ferry started, for metrics.
type counts struct {
	// records are the records the hubs read into their caches.
	records atomic.Int64
	// cutOffs are the callers cut off for reading too slowly.
	cutOffs atomic.Int64
	// hits are the callers that started in a cache; misses those that
	// needed a backfill or a catch-up reader first.
	hits, misses atomic.Int64
	// catchUps are the catch-up readers (trains) started, trains those
	// running.
	catchUps, trains atomic.Int64
	// backfills are the backfills started, backfilling those running.
	backfills, backfilling atomic.Int64
	// evicted are the entries the caches dropped, evictedBytes their size.
	evicted, evictedBytes atomic.Int64
}

type hubKey struct {
	cluster, topic, prefix string
	field                  protowire.Number
}

// hubRef is a hub in Hubs.hubs. A hub is started outside Hubs.mu (it
// lists offsets, which takes a round trip or, with Kafka slow, seconds):
// until ready is closed, hub and err are unset and other callers of the
// same key wait for ready; every other key goes on meanwhile.
type hubRef struct {
	hub *Hub
	err error
	// left is set with err when the caller that started the hub left
	// before it ran: a caller waiting starts it again.
	left  bool
	ready chan struct{}
	refs  int
}

// NewHubs returns an empty set of hubs.
func NewHubs(o Options) *Hubs {
	hs := &Hubs{clusters: o.Clusters, catchUpWait: o.CatchUpWait, logger: o.Logger,
		catchUpSlots: make(chan struct{}, max(o.MaxCatchUps, 1)),
		hubs:         map[hubKey]*hubRef{}, warmed: map[hubKey]bool{}}
	hs.hub = hubConfig{refresh: o.PartitionRefresh, maxBytes: o.CacheMaxBytes, maxAge: o.CacheMaxAge, counts: &hs.counts, logger: o.Logger,
		train: trainConfig{maxBytes: o.CatchUpWindow}}
	if hs.hub.maxBytes <= 0 {
		hs.hub.maxBytes = 64 << 20
	}
	if hs.hub.train.maxBytes <= 0 {
		hs.hub.train.maxBytes = 4 << 20
	}
	hs.ctx, hs.cancel = context.WithCancel(context.Background())
	return hs
}

// reachable fails with UNAVAILABLE while cluster is known to be
// unreachable, so that callers during an outage do not each dial it.
func (hs *Hubs) reachable(cluster string) error {
	if err := hs.clusters(cluster).Reachable(); err != nil {
		return status.Errorf(codes.Unavailable, "%v: retry later", err)
	}
	return nil
}

// kafkaError is a failed Kafka request as the caller gets it, "op: err"
// with the code kafka.Code gives err, and tells the cluster when the
// request did not reach it (not when the caller left).
func (hs *Hubs) kafkaError(ctx context.Context, cluster, op string, err error) error {
	if ctx.Err() == nil {
		hs.clusters(cluster).NoteUnreachable(err)
	}
	return kafka.Wrap(op, err)
}

// Stats counts the Kafka readers of fetch routes — one hub per topic in
// use, at most one backfill reader per hub, and the catch-up readers
// (trains) shared by the callers whose position no cache holds — and the
// callers they serve.
type Stats struct {
	Hubs, CatchUps int
	// Riders are the callers reading on catch-up readers.
	Riders int
	// Backfills are the backfill readers running.
	Backfills int
	// Subscribers are the callers reading a hub's cache.
	Subscribers int
	// CacheBytes and CacheRecords are what the hubs' caches hold.
	CacheBytes, CacheRecords int64
}

// Counts are what the hubs did since Ferry started.
type Counts struct {
	// Records are the records the hubs read into their caches.
	Records int64
	// CutOffs are the callers cut off because they read too slowly.
	CutOffs int64
	// CacheHits are the callers that started at a position a cache held;
	// CacheMisses those that needed a backfill or a catch-up reader first.
	CacheHits, CacheMisses int64
	// Backfills are the backfill readers started, CatchUps the catch-up
	// readers started.
	Backfills, CatchUps int64
	// Evicted are the records the caches dropped, EvictedBytes their size.
	Evicted, EvictedBytes int64
}

// CacheStats is one topic's cache.
type CacheStats struct {
	Cluster, Topic string
	Bytes, Records int64
	Subscribers    int
}

// Counts returns what the hubs did since Ferry started.
func (hs *Hubs) Counts() Counts {
	c := &hs.counts
	return Counts{Records: c.records.Load(), CutOffs: c.cutOffs.Load(),
		CacheHits: c.hits.Load(), CacheMisses: c.misses.Load(),
		Backfills: c.backfills.Load(), CatchUps: c.catchUps.Load(),
		Evicted: c.evicted.Load(), EvictedBytes: c.evictedBytes.Load()}
}

// Stats returns how many Kafka readers are running, how many callers the
// hubs serve and what their caches hold.
func (hs *Hubs) Stats() Stats {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	st := Stats{CatchUps: int(hs.counts.trains.Load()), Backfills: int(hs.counts.backfilling.Load())}
	for _, ref := range hs.hubs {
		if ref.hub == nil {
			continue // starting
		}
		st.Hubs++
		st.Subscribers += ref.hub.subscribers()
		st.Riders += ref.hub.riders()
		n, b := ref.hub.cacheStats()
		st.CacheRecords += int64(n)
		st.CacheBytes += b
	}
	return st
}

// Caches returns each fetched topic's cache, for metrics by topic: the
// hubs of one topic (routes with different message id fields or meta
// prefixes) are summed.
func (hs *Hubs) Caches() []CacheStats {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	type topic struct{ cluster, topic string }
	sum := map[topic]*CacheStats{}
	out := make([]CacheStats, 0, len(hs.hubs))
	for k, ref := range hs.hubs {
		if ref.hub == nil {
			continue // starting
		}
		n, b := ref.hub.cacheStats()
		c := sum[topic{k.cluster, k.topic}]
		if c == nil {
			out = append(out, CacheStats{Cluster: k.cluster, Topic: k.topic})
			c = &out[len(out)-1]
			sum[topic{k.cluster, k.topic}] = c
		}
		c.Bytes += b
		c.Records += int64(n)
		c.Subscribers += ref.hub.subscribers()
	}
	return out
}

// acquire returns k's hub, started if none runs, and the function that
// gives the reference back (the last one stops the hub).
func (hs *Hubs) acquire(ctx context.Context, k hubKey) (*Hub, func(), error) {
	hs.mu.Lock()
	for {
		ref := hs.hubs[k]
		if ref == nil {
			break
		}
		if h := ref.hub; h != nil {
			ref.refs++
			hs.mu.Unlock()
			return h, hs.releaser(k, ref), nil
		}
		hs.mu.Unlock()
		select {
		case <-ref.ready:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		// The caller that started it left before it ran: start it for
		// this one.
		if ref.err != nil && !ref.left {
			return nil, nil, ref.err
		}
		hs.mu.Lock()
	}
	// Starting a hub lists offsets: during an outage, fail at once rather
	// than dial. A running hub serves callers from its cache without
	// Kafka, and reads on once Kafka is back.
	if err := hs.reachable(k.cluster); err != nil {
		hs.mu.Unlock()
		return nil, nil, err
	}
	ref := &hubRef{ready: make(chan struct{}), refs: 1}
	hs.hubs[k] = ref
	hs.mu.Unlock()

	h, err := startHub(ctx, hs.clusters(k.cluster), k, hs.hub)

	hs.mu.Lock()
	defer hs.mu.Unlock()
	if err == nil && hs.ctx.Err() != nil {
		h.close() // Close ran meanwhile: it did not see this hub
		err = status.Error(codes.Unavailable, "Ferry is shutting down")
	}
	ref.err, ref.left = err, err != nil && ctx.Err() != nil
	if err == nil {
		ref.hub = h
	}
	close(ref.ready)
	if err != nil {
		if hs.hubs[k] == ref {
			delete(hs.hubs, k)
		}
		return nil, nil, err
	}
	return h, hs.releaser(k, ref), nil
}

// releaser returns the function that gives back a reference to ref's
// hub, once however often it is called.
func (hs *Hubs) releaser(k hubKey, ref *hubRef) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			hs.mu.Lock()
			defer hs.mu.Unlock()
			if ref.refs--; ref.refs == 0 && hs.hubs[k] == ref {
				delete(hs.hubs, k)
				ref.hub.close()
			}
		})
	}
}

// Prewarm starts the hub of the route's topic now, and fills its cache from the
// topic's earliest record (or fetch.cache.max_age back) as far as the
// cache holds; the hub then runs until Close. While the cluster cannot be
// reached it tries again every few seconds. A route whose hub is warm
// already changes nothing.
func (hs *Hubs) Prewarm(r *config.FetchRoute) {
	k := keyOf(r)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.warmed[k] || hs.ctx.Err() != nil {
		return
	}
	hs.warmed[k] = true
	hs.warm.Add(1)
	go func() {
		defer hs.warm.Done()
		for {
			if err := hs.prewarm(k); err == nil {
				return
			} else if hs.ctx.Err() == nil {
				hs.logger.Warn("pre-warming a fetched topic: trying again", "cluster", k.cluster, "topic", k.topic, "err", err)
			}
			select {
			case <-hs.ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}()
}

// prewarm starts k's hub, holding a reference it never gives back, and
// its backfill from where the cache is to begin.
func (hs *Hubs) prewarm(k hubKey) error {
	ctx, cancel := context.WithTimeout(hs.ctx, 30*time.Second)
	defer cancel()
	at := kafka.AtStart()
	if hs.hub.maxAge > 0 {
		at = kafka.AtOrAfter(time.Now().Add(-hs.hub.maxAge))
	}
	from, err := listOffsets(ctx, hs.clusters(k.cluster), k.topic, at)
	if err != nil {
		return err
	}
	h, _, err := hs.acquire(ctx, k)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed && h.filling == nil && !h.covers(from) {
		h.startBackfill(from, true)
	}
	return nil
}

// Close stops every hub still running. Call it after the gRPC server
// stopped. A hub stops as soon as its poll sees the cancellation, so ctx
// is not used. It is safe to call more than once.
func (hs *Hubs) Close(context.Context) error {
	hs.cancel()
	hs.warm.Wait()
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for k, ref := range hs.hubs {
		if ref.hub != nil { // one starting closes itself
			ref.hub.close()
		}
		delete(hs.hubs, k)
	}
	return nil
}
