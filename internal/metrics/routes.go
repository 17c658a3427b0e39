package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryproxy/ferry/internal/produce"
)

// routes holds the series of produce routes, registered with the first
// route measured.
type routes struct {
	once                        sync.Once
	requests, responses         *prometheus.CounterVec
	requestBytes, responseBytes *prometheus.CounterVec
	firstReply                  *prometheus.HistogramVec
}

// ProduceRoute returns the series the produce route called name counts
// into (produce.Route.Measure): request and response messages and their
// bytes, and the time to a call's first reply. A route rebuilt by a
// reload under the same name counts on in the same series.
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
		rs.requestBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "produce_request_bytes_total",
			Help: "Bytes of the request messages produce routes wrote to Kafka, by route and method.",
		}, []string{"route", "method"})
		rs.responseBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "produce_response_bytes_total",
			Help: "Bytes of the response messages produce routes sent to their callers, by route and method.",
		}, []string{"route", "method"})
		rs.firstReply = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "produce_first_reply_seconds",
			Help:    "Time from a call reaching a request-reply route to its first response message, by route.",
			Buckets: durationBuckets[:],
		}, []string{"route"})
		r.reg.MustRegister(rs.requests, rs.responses, rs.requestBytes, rs.responseBytes, rs.firstReply)
	})
	mb := &methodBytes{route: name, rs: rs}
	mb.series.Store(&map[string]byteSeries{})
	return produce.Meter{
		Requests:   rs.requests.WithLabelValues(name),
		Responses:  rs.responses.WithLabelValues(name),
		FirstReply: rs.firstReply.WithLabelValues(name),
		Bytes:      mb.of,
	}
}

// methodBytes holds a route's byte counters of each method it served,
// resolved at the method's first call. The methods a route serves are
// those of the loaded protos: a bounded set.
type methodBytes struct {
	route string
	rs    *routes
	// series is replaced, never changed: a call reads it without a lock;
	// mu serializes the replacements.
	series atomic.Pointer[map[string]byteSeries]
	mu     sync.Mutex
}

type byteSeries struct{ request, response prometheus.Counter }

// of returns the byte counters of method's calls.
func (mb *methodBytes) of(method string) (request, response produce.Adder) {
	if s, ok := (*mb.series.Load())[method]; ok {
		return s.request, s.response
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	cur := *mb.series.Load()
	s, ok := cur[method]
	if !ok {
		s = byteSeries{
			request:  mb.rs.requestBytes.WithLabelValues(mb.route, method),
			response: mb.rs.responseBytes.WithLabelValues(mb.route, method),
		}
		next := make(map[string]byteSeries, len(cur)+1)
		for m, v := range cur {
			next[m] = v
		}
		next[method] = s
		mb.series.Store(&next)
	}
	return s.request, s.response
}
