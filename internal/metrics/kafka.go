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
// named cluster with kprom (ferry_kafka_*: connections, bytes and
// requests, produced and fetched records, batches and bytes, by broker),
// labelled cluster="<cluster>". Give it to every client of the cluster
// (kafka.Cluster.AddHooks).
//
// kprom measures one client per kprom.Metrics, and a cluster has many
// (producers, readers, group members, the admin client), which come and
// go: the hook sums all of them into the series of one kprom.Metrics,
// created with the cluster's first client. kprom's buffered_* gauges,
// which read one client's buffers, are left out for that reason.
func (r *Registry) KafkaHook(cluster string) kgo.Hook {
	h := &kafkaHook{m: kprom.NewMetrics(namespace,
		kprom.Subsystem("kafka"),
		kprom.Registry(nil),
		// Not by topic: the Kafka API writes to topics its callers name.
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.Records, kprom.UncompressedBytes),
		kprom.WithStaticLabel(prometheus.Labels{"cluster": cluster}))}
	r.reg.MustRegister(h)
	return h
}

// kafkaHook forwards every client's events to one kprom.Metrics: those
// kprom counts (it reads bytes and errors from OnBrokerE2E, not from
// OnBrokerRead and OnBrokerWrite, which the hook leaves out so that
// franz-go does not call it twice per request for nothing).
type kafkaHook struct {
	once  sync.Once
	ready atomic.Bool // m's series exist
	m     *kprom.Metrics
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

func (h *kafkaHook) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, p int32, m kgo.ProduceBatchMetrics) {
	if h.ready.Load() {
		h.m.OnProduceBatchWritten(meta, topic, p, m)
	}
}

func (h *kafkaHook) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, p int32, m kgo.FetchBatchMetrics) {
	if h.ready.Load() {
		h.m.OnFetchBatchRead(meta, topic, p, m)
	}
}

func (h *kafkaHook) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if h.ready.Load() {
		h.m.OnBrokerE2E(meta, key, e2e)
	}
}

// Describe sends nothing: the series exist only from the first client
// on, so the registry checks them as they are collected.
func (h *kafkaHook) Describe(chan<- *prometheus.Desc) {}

// Collect sends kprom's series but the buffered_* gauges.
func (h *kafkaHook) Collect(ch chan<- prometheus.Metric) {
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
	_ kgo.HookNewClient           = (*kafkaHook)(nil)
	_ kgo.HookBrokerConnect       = (*kafkaHook)(nil)
	_ kgo.HookBrokerDisconnect    = (*kafkaHook)(nil)
	_ kgo.HookBrokerThrottle      = (*kafkaHook)(nil)
	_ kgo.HookProduceBatchWritten = (*kafkaHook)(nil)
	_ kgo.HookFetchBatchRead      = (*kafkaHook)(nil)
	_ kgo.HookBrokerE2E           = (*kafkaHook)(nil)
	_ prometheus.Collector        = (*kafkaHook)(nil)
)
