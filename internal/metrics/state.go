package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

// Sources are where the components' own counts are read when Prometheus
// scrapes. Each may be nil: its metrics are then left out.
type Sources struct {
	// Backends returns each back end's counters, by configured name.
	Backends func() map[string]backend.Stats
	// Fetch returns the fetch hubs' state, FetchCounts what they did.
	Fetch       func() fetch.Stats
	FetchCounts func() fetch.Counts
	// FetchCaches returns each fetched topic's cache.
	FetchCaches func() []fetch.CacheStats
	// PendingReplies returns how many calls wait for replies.
	PendingReplies func() int
	// CachedReplyBytes returns the bytes of the replies kept for retries.
	CachedReplyBytes func() int64
	// KafkaAPIMembers returns the consumer group members the Kafka API runs.
	KafkaAPIMembers func() int
	// KafkaAPICounts returns what the Kafka API's members did, by
	// cluster.
	KafkaAPICounts func() map[string]kafkaapi.Counts
	// KafkaAPILag returns how far behind the Kafka API's members are, by
	// cluster.
	KafkaAPILag func() map[string]kafkaapi.Lag
	// FetchGroupMembers, FetchGroupCounts and FetchGroupLag are the same
	// of the consumer groups of group fetch routes (routes[].fetch.group).
	FetchGroupMembers func() int
	FetchGroupCounts  func() map[string]kafkaapi.Counts
	FetchGroupLag     func() map[string]kafkaapi.Lag
}

// Watch registers a collector that reads s at every scrape: nothing is
// counted on the components' paths for it.
func (r *Registry) Watch(s Sources) {
	r.reg.MustRegister(&state{s: s})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
}

var (
	backendOpen        = desc("backend_calls_open", "Calls a back end read and has not finished, waiting ones included.", "backend")
	backendWaiting     = desc("backend_calls_waiting", "Calls a back end read that wait for a slot (backends[].max_in_flight).", "backend")
	backendPauses      = desc("backend_pauses_total", "Times a back end paused reading because calls waited for a slot.", "backend")
	backendRetries     = desc("backend_retries_total", "Attempts a back end repeated because its server was UNAVAILABLE.", "backend")
	backendPartitions  = desc("backend_partitions", "Partitions of its request topic a back end owns.", "backend")
	backendAssignments = desc("backend_assignments_total", "Assignments a back end received from its group, with partitions or none: the first as it joined, then one per rebalance.", "backend")
	backendRevokes     = desc("backend_revokes_total", "Rebalances that took partitions of its request topic from a back end.", "backend")
	backendLosses      = desc("backend_losses_total", "Times a back end lost partitions of its request topic without committing them.", "backend")
	backendLag         = desc("backend_lag_records", "Records of a partition a back end owns not finished yet: the high watermark at its last fetch less the offset it commits next.", "backend", "partition")
	fetchHubs          = desc("fetch_hubs", "Hubs running: Kafka readers shared by the callers of fetch routes at the tail.")
	fetchSubscribers   = desc("fetch_subscribers", "Callers of fetch routes reading their topic's cache.")
	fetchCatchUps      = desc("fetch_catch_up_readers", "Catch-up readers running: Kafka readers shared by the callers of fetch routes behind their topic's cache.")
	fetchRiders        = desc("fetch_catch_up_subscribers", "Callers of fetch routes reading on catch-up readers.")
	fetchRecords       = desc("fetch_records_total", "Records the hubs read, each offered to every subscriber of its hub.")
	fetchCutOffs       = desc("fetch_cut_offs_total", "Callers of fetch routes that fell behind and were cut off because no catch-up reader took them.")
	fetchBackfills     = desc("fetch_backfill_readers", "Backfill readers running: at most one per fetched topic, reading the records before its cache into it.")
	fetchBackfillsDone = desc("fetch_backfills_total", "Backfills the hubs started.")
	fetchCatchUpsDone  = desc("fetch_catch_up_readers_started_total", "Catch-up readers started for callers whose position no cache or running catch-up reader held.")
	fetchCacheHits     = desc("fetch_cache_hits_total", "Callers of fetch routes that started at a position their topic's cache held.")
	fetchCacheMisses   = desc("fetch_cache_misses_total", "Callers of fetch routes that started before their topic's cache and needed a backfill or a catch-up reader first.")
	fetchEvicted       = desc("fetch_cache_evicted_records_total", "Records the fetched topics' caches dropped for fetch.cache.max_bytes or max_age.")
	fetchEvictedBytes  = desc("fetch_cache_evicted_bytes_total", "Bytes of the records the fetched topics' caches dropped.")
	fetchCacheBytes    = desc("fetch_cache_bytes", "Bytes a fetched topic's cache holds, by cluster and topic.", "cluster", "topic")
	fetchCacheRecords  = desc("fetch_cache_records", "Records a fetched topic's cache holds, by cluster and topic.", "cluster", "topic")
	repliesPending     = desc("replies_pending", "Calls of produce routes waiting for replies.")
	repliesCached      = desc("replies_cached_bytes", "Bytes of replies kept for retries, counted against replies.max_cached_bytes.")
	kafkaAPI           = consumerDescs("kafka_api", "the Kafka API")
	fetchGroup         = consumerDescs("fetch_group", "group fetch routes")
)

// consumers are the metrics of a face's consumer group members, those of
// the Kafka API or those of group fetch routes.
type consumers struct {
	members, deliveries, redeliveries, acks, dead, lag, lagMax *prometheus.Desc
}

// consumerDescs names the metrics of whose members: ferry_<prefix>_...
func consumerDescs(prefix, whose string) consumers {
	return consumers{
		members:      desc(prefix+"_members", "Consumer group members of "+whose+" on this instance, those leaving included."),
		deliveries:   desc(prefix+"_deliveries_total", "Messages "+whose+" delivered to consumers, again ones included, by cluster.", "cluster"),
		redeliveries: desc(prefix+"_redeliveries_total", "Deliveries of messages "+whose+" delivered before: not acknowledged in time, handed back, or left by a consumer that went; by cluster.", "cluster"),
		acks:         desc(prefix+"_acks_total", "Acknowledgements that settled a message "+whose+" delivered, by cluster.", "cluster"),
		dead:         desc(prefix+"_dead_letters_total", "Messages "+whose+" wrote to their dead-letter topic, by cluster.", "cluster"),
		lag:          desc(prefix+"_consumer_lag_records", "Records of the partitions the consumer group members of "+whose+" own not acknowledged yet, summed over groups and topics, by cluster: each partition's high watermark at the last fetch less the offset its member commits next.", "cluster"),
		lagMax:       desc(prefix+"_consumer_lag_max_records", "The largest lag of one of the consumer group members of "+whose+" (one group's topic) on this instance, by cluster.", "cluster"),
	}
}

func (c consumers) all() []*prometheus.Desc {
	return []*prometheus.Desc{c.members, c.deliveries, c.redeliveries, c.acks, c.dead, c.lag, c.lagMax}
}

// collect emits the metrics from what members, counts and lag return;
// nil ones are left out.
func (c consumers) collect(ch chan<- prometheus.Metric, members func() int, counts func() map[string]kafkaapi.Counts, lag func() map[string]kafkaapi.Lag) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if members != nil {
		gauge(c.members, float64(members()))
	}
	if counts != nil {
		for cluster, k := range counts() {
			counter(c.deliveries, float64(k.Deliveries), cluster)
			counter(c.redeliveries, float64(k.Redeliveries), cluster)
			counter(c.acks, float64(k.Acks), cluster)
			counter(c.dead, float64(k.DeadLetters), cluster)
		}
	}
	if lag != nil {
		for cluster, l := range lag() {
			gauge(c.lag, float64(l.Records), cluster)
			gauge(c.lagMax, float64(l.MaxRecords), cluster)
		}
	}
}

// state reads the components' counts at scrape time.
type state struct{ s Sources }

func (st *state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{backendOpen, backendWaiting, backendPauses, backendRetries, backendPartitions,
		backendAssignments, backendRevokes, backendLosses, backendLag, fetchHubs, fetchSubscribers, fetchCatchUps, fetchRiders, fetchRecords, fetchCutOffs, fetchBackfills, fetchBackfillsDone, fetchCatchUpsDone, fetchCacheHits, fetchCacheMisses,
		fetchEvicted, fetchEvictedBytes, fetchCacheBytes, fetchCacheRecords, repliesPending,
		repliesCached} {
		ch <- d
	}
	for _, d := range append(kafkaAPI.all(), fetchGroup.all()...) {
		ch <- d
	}
}

func (st *state) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	s := st.s
	if s.Backends != nil {
		for name, b := range s.Backends() {
			gauge(backendOpen, float64(b.Open), name)
			gauge(backendWaiting, float64(b.Waiting), name)
			counter(backendPauses, float64(b.Pauses), name)
			counter(backendRetries, float64(b.Retries), name)
			gauge(backendPartitions, float64(b.Partitions), name)
			counter(backendAssignments, float64(b.Assignments), name)
			counter(backendRevokes, float64(b.Revokes), name)
			counter(backendLosses, float64(b.Losses), name)
			for p, lag := range b.Lag {
				gauge(backendLag, float64(lag), name, strconv.Itoa(int(p)))
			}
		}
	}
	if s.Fetch != nil {
		f := s.Fetch()
		gauge(fetchHubs, float64(f.Hubs))
		gauge(fetchSubscribers, float64(f.Subscribers))
		gauge(fetchCatchUps, float64(f.CatchUps))
		gauge(fetchRiders, float64(f.Riders))
		gauge(fetchBackfills, float64(f.Backfills))
	}
	if s.FetchCounts != nil {
		f := s.FetchCounts()
		counter(fetchRecords, float64(f.Records))
		counter(fetchCutOffs, float64(f.CutOffs))
		counter(fetchBackfillsDone, float64(f.Backfills))
		counter(fetchCatchUpsDone, float64(f.CatchUps))
		counter(fetchCacheHits, float64(f.CacheHits))
		counter(fetchCacheMisses, float64(f.CacheMisses))
		counter(fetchEvicted, float64(f.Evicted))
		counter(fetchEvictedBytes, float64(f.EvictedBytes))
	}
	if s.FetchCaches != nil {
		for _, c := range s.FetchCaches() {
			gauge(fetchCacheBytes, float64(c.Bytes), c.Cluster, c.Topic)
			gauge(fetchCacheRecords, float64(c.Records), c.Cluster, c.Topic)
		}
	}
	if s.PendingReplies != nil {
		gauge(repliesPending, float64(s.PendingReplies()))
	}
	if s.CachedReplyBytes != nil {
		gauge(repliesCached, float64(s.CachedReplyBytes()))
	}
	kafkaAPI.collect(ch, s.KafkaAPIMembers, s.KafkaAPICounts, s.KafkaAPILag)
	fetchGroup.collect(ch, s.FetchGroupMembers, s.FetchGroupCounts, s.FetchGroupLag)
}

var _ prometheus.Collector = (*state)(nil)
