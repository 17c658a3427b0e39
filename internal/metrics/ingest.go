package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryproxy/ferry/internal/ingest"
)

var (
	sourceState      = desc("source_state", "1 for the state each source is in on this instance, 0 for the others: standby (another instance runs it), resuming, connecting, running, backing_off, waiting (reopening after the server ended the call with OK), stopped.", "source", "state")
	sourceRecords    = desc("source_records_total", "Records of a source Kafka acknowledged.", "source")
	sourceReconnects = desc("source_reconnects_total", "Calls of a source opened again after one ended.", "source")
	sourceGaps       = desc("source_gaps_total", "Calls of a streaming source without a cursor opened again after one failed: the new call starts from the configured request, and what the server sent in between is not in the topic.", "source")
	sourceFailed     = desc("source_failed_records_total", "Records of a source Kafka refused; a source with a cursor reads them again.", "source")
	sourceLost       = desc("source_lost_records_total", "Records Kafka refused of a source without a cursor, which cannot read them again.", "source")
	sourceResumes    = desc("source_resumes_total", "Times a source found where it stopped in its topic and opened its call from there.", "source")
	sourceInFlight   = desc("source_in_flight_records", "Records of a source read from its call and not yet acknowledged by Kafka, bounded by sources[].max_in_flight.", "source")
)

// WatchSources registers the sources' metrics, read from status at every
// scrape. Sources are named in the configuration, so their labels are
// bounded.
func (r *Registry) WatchSources(status func() []ingest.Status) {
	r.reg.MustRegister(&sourcesCollector{status: status})
}

type sourcesCollector struct{ status func() []ingest.Status }

func (c *sourcesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sourceState, sourceRecords, sourceReconnects, sourceGaps, sourceFailed, sourceLost, sourceResumes, sourceInFlight} {
		ch <- d
	}
}

func (c *sourcesCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.status() {
		for _, s := range ingest.States {
			v := 0.0
			if s == st.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(sourceState, prometheus.GaugeValue, v, st.Name, string(s))
		}
		for _, m := range []struct {
			d *prometheus.Desc
			v uint64
		}{{sourceRecords, st.Records}, {sourceReconnects, st.Reconnects}, {sourceGaps, st.Gaps}, {sourceFailed, st.Failed}, {sourceLost, st.Lost}, {sourceResumes, st.Resumes}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), st.Name)
		}
		ch <- prometheus.MustNewConstMetric(sourceInFlight, prometheus.GaugeValue, float64(st.InFlight), st.Name)
	}
}

var _ prometheus.Collector = (*sourcesCollector)(nil)
