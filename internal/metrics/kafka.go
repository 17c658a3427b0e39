package metrics

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaHook returns the franz-go hook that measures every client of the
// named cluster (ferry_kafka_*: connections, bytes and errors with kprom,
// records written by result and read by broker), labelled
// cluster="<cluster>". Give it to every client of the cluster
// (kafka.Cluster.AddHooks).
//
// kprom measures one client per kprom.Metrics, and a cluster has many
// (producers, readers, group members, the admin client), which come and
// go: the hook sums all of them into the series of one kprom.Metrics,
// created with the cluster's first client. kprom's buffered_* gauges,
// which read one client's buffers, are left out for that reason.
func (r *Registry) KafkaHook(cluster string) kgo.Hook {
	labels := prometheus.Labels{"cluster": cluster}
	batch := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "kafka", Name: name, Help: help, ConstLabels: labels,
		}, []string{"node_id"})
	}
	h := &kafkaHook{
		m: kprom.NewMetrics(namespace,
			kprom.Subsystem("kafka"),
			kprom.Registry(nil),
			kprom.WithStaticLabel(labels),
			// Record batches are the hook's own to count (see batches).
			kprom.FetchAndProduceDetail()),
		fetched: batches{
			records: batch("fetch_records_total", "Records read, by broker."),
			bytes:   batch("fetch_uncompressed_bytes_total", "Bytes of the records read, after decompression, by broker."),
		},
	}
	produced := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "kafka", Name: "produce_records_total", ConstLabels: labels,
		Help: "Records Ferry wrote, by result: ok, or error when the record was not written.",
	}, []string{"result"})
	h.produced = produced
	h.producedOK, h.producedErr = produced.WithLabelValues("ok"), produced.WithLabelValues("error")
	r.reg.MustRegister(h)
	return h
}

// kafkaHook forwards every client's connection and request events to one
// kprom.Metrics, and counts records itself, not by topic (the Kafka API
// writes to topics its callers name):
//
//   - records written as their promises finish (OnProduceRecordUnbuffered,
//     one counter each): franz-go runs the batch hook kprom uses on a new
//     goroutine per produce response, which cost a unary call 5 % of its
//     throughput on one connection;
//   - batches read by broker, with series resolved once per broker:
//     kprom resolves them from a fresh label map at every batch.
//
// kprom reads bytes and errors from OnBrokerE2E, not from OnBrokerRead
// and OnBrokerWrite, which the hook leaves out so that franz-go does not
// call it twice per request for nothing.
type kafkaHook struct {
	once  sync.Once
	ready atomic.Bool // m's series exist
	m     *kprom.Metrics

	produced                *prometheus.CounterVec
	producedOK, producedErr prometheus.Counter
	fetched                 batches
}

// batches counts record batches by broker.
type batches struct {
	records, bytes *prometheus.CounterVec
	byNode         sync.Map // node id → nodeSeries
}

type nodeSeries struct{ records, bytes prometheus.Counter }

// add counts a batch of n records of size bytes written to or read from
// node.
func (b *batches) add(node int32, n, size int) {
	s, ok := b.byNode.Load(node)
	if !ok {
		name := kgo.NodeName(node)
		s, _ = b.byNode.LoadOrStore(node, nodeSeries{b.records.WithLabelValues(name), b.bytes.WithLabelValues(name)})
	}
	ns := s.(nodeSeries)
	ns.records.Add(float64(n))
	ns.bytes.Add(float64(size))
}

func (h *kafkaHook) OnNewClient(cl *kgo.Client) {
	h.once.Do(func() {
		h.m.OnNewClient(cl)
		h.ready.Store(true)
	})
}

func (h *kafkaHook) OnBrokerConnect(meta kgo.BrokerMetadata, d time.Duration, c net.Conn, err error) {
	if h.ready.Load() {
		h.m.OnBrokerConnect(meta, d, c, err)
	}
}

func (h *kafkaHook) OnBrokerDisconnect(meta kgo.BrokerMetadata, c net.Conn) {
	if h.ready.Load() {
		h.m.OnBrokerDisconnect(meta, c)
	}
}

func (h *kafkaHook) OnBrokerThrottle(meta kgo.BrokerMetadata, d time.Duration, after bool) {
	if h.ready.Load() {
		h.m.OnBrokerThrottle(meta, d, after)
	}
}

func (h *kafkaHook) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if err != nil {
		h.producedErr.Inc()
		return
	}
	h.producedOK.Inc()
}

func (h *kafkaHook) OnFetchBatchRead(meta kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.fetched.add(meta.NodeID, m.NumRecords, m.UncompressedBytes)
}

func (h *kafkaHook) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if h.ready.Load() {
		h.m.OnBrokerE2E(meta, key, e2e)
	}
}

// Describe sends nothing: the series exist only from the first client
// on, so the registry checks them as they are collected.
func (h *kafkaHook) Describe(chan<- *prometheus.Desc) {}

// Collect sends the batch series, and kprom's but the buffered_* gauges.
func (h *kafkaHook) Collect(ch chan<- prometheus.Metric) {
	h.produced.Collect(ch)
	h.fetched.records.Collect(ch)
	h.fetched.bytes.Collect(ch)
	if !h.ready.Load() {
		return
	}
	all := make(chan prometheus.Metric)
	go func() {
		h.m.Collect(all)
		close(all)
	}()
	for m := range all {
		if !strings.Contains(m.Desc().String(), `"`+namespace+"_kafka_buffered_") {
			ch <- m
		}
	}
}

var (
	_ kgo.HookNewClient               = (*kafkaHook)(nil)
	_ kgo.HookBrokerConnect           = (*kafkaHook)(nil)
	_ kgo.HookBrokerDisconnect        = (*kafkaHook)(nil)
	_ kgo.HookBrokerThrottle          = (*kafkaHook)(nil)
	_ kgo.HookProduceRecordUnbuffered = (*kafkaHook)(nil)
	_ kgo.HookFetchBatchRead          = (*kafkaHook)(nil)
	_ kgo.HookBrokerE2E               = (*kafkaHook)(nil)
	_ prometheus.Collector            = (*kafkaHook)(nil)
)
