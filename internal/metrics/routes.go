package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryproxy/ferry/internal/produce"
)

// routes holds the series of produce routes, registered with the first
// route measured.
type routes struct {
	once                sync.Once
	requests, responses *prometheus.CounterVec
	firstReply          *prometheus.HistogramVec
}

// ProduceRoute returns the series the produce route called name counts
// into (produce.Route.Measure): request and response messages, and the
// time to a call's first reply. A route rebuilt by a reload under the same
// name counts on in the same series.
func (r *Registry) ProduceRoute(name string) produce.Meter {
	rs := &r.routes
	rs.once.Do(func() {
		rs.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "produce_request_messages_total",
			Help: "Request messages produce routes wrote to Kafka, by route.",
		}, []string{"route"})
		rs.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "produce_response_messages_total",
			Help: "Response messages produce routes sent to their callers, by route.",
		}, []string{"route"})
		rs.firstReply = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "produce_first_reply_seconds",
			Help:    "Time from a call reaching a request-reply route to its first response message, by route.",
			Buckets: durationBuckets[:],
		}, []string{"route"})
		r.reg.MustRegister(rs.requests, rs.responses, rs.firstReply)
	})
	return produce.Meter{
		Requests:   rs.requests.WithLabelValues(name),
		Responses:  rs.responses.WithLabelValues(name),
		FirstReply: rs.firstReply.WithLabelValues(name),
	}
}
