package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/edge"
)

// Label values of calls whose method is not a label of its own.
const (
	// UnknownMethod is the method of a gRPC call to a method no loaded
	// proto or service defines: such names are the caller's choice.
	UnknownMethod = "unknown"
	// UnmatchedPattern is the method of a REST call no pattern served.
	UnmatchedPattern = "unmatched"
)

// durationBuckets are the upper bounds, in seconds, of the call duration
// histogram: from a call answered from memory to a long fetch stream.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// faces are the faces a call can have; each has its started and in-flight
// series resolved once.
var faces = []edge.Face{edge.GRPC, edge.REST, edge.PixyREST, edge.HTTP, edge.BackendOut}

// calls counts the calls of every face.
type calls struct {
	known    func(method string) bool
	byFace   map[edge.Face]faceSeries // read-only after construction
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// series holds the resolved series of each seriesKey: resolving
	// labels hashes them, a map lookup of a comparable key is cheaper.
	series sync.Map // seriesKey → endSeries
}

type faceSeries struct {
	started  prometheus.Counter
	inFlight prometheus.Gauge
}

type seriesKey struct {
	face          edge.Face
	route, method string
	code          int
}

type endSeries struct {
	handled  prometheus.Counter
	duration prometheus.Observer
}

// Calls returns the edge interceptor that counts every call passing the
// chain: calls started and in flight by face, and as each ends, calls
// handled by face, route, method and code, and their duration by face,
// route and method. known reports whether a gRPC method is one Ferry
// serves or calls; other method names count as UnknownMethod. It is called
// only while calls run, so it may be completed before the servers start.
//
// Put it first in the chain, so that it counts the calls the
// interceptors after it refuse.
func (r *Registry) Calls(known func(method string) bool) edge.Interceptor {
	started := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "calls_started_total",
		Help: "Calls that reached Ferry (or a back end's call that left it), by face.",
	}, []string{"face"})
	inFlight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "calls_in_flight",
		Help: "Calls running now, by face.",
	}, []string{"face"})
	c := &calls{
		known:  known,
		byFace: map[edge.Face]faceSeries{},
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "calls_handled_total",
			Help: "Calls that ended, by face, route, method and code: the gRPC code as grpc-go names it, or the HTTP status of a REST call.",
		}, []string{"face", "route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "call_duration_seconds",
			Help:    "How long calls took from reaching Ferry to their end, by face, route and method.",
			Buckets: durationBuckets,
		}, []string{"face", "route", "method"}),
	}
	for _, f := range faces {
		c.byFace[f] = faceSeries{started: started.WithLabelValues(string(f)), inFlight: inFlight.WithLabelValues(string(f))}
	}
	r.reg.MustRegister(started, inFlight, c.handled, c.duration)
	return edge.Interceptor{Begin: c.begin, End: c.end}
}

func (c *calls) begin(_ context.Context, call *edge.Call) (context.Context, error) {
	if s, ok := c.byFace[call.Face]; ok {
		s.started.Inc()
		s.inFlight.Inc()
	}
	return nil, nil
}

func (c *calls) end(_ context.Context, call *edge.Call, err error) {
	if s, ok := c.byFace[call.Face]; ok {
		s.inFlight.Dec()
	}
	k := seriesKey{face: call.Face, route: call.RouteName()}
	switch call.Face {
	case edge.GRPC, edge.BackendOut:
		k.method = call.Method
		if !c.known(k.method) {
			k.method = UnknownMethod
		}
		k.code = int(status.Code(err))
	default:
		// A REST call transcoded to Ferry's gRPC service is known by its
		// method; others by the pattern that served them.
		switch rpc, pattern := call.RPC(), call.Route(); {
		case rpc != "" && c.known(rpc):
			k.method = rpc
		case pattern != "":
			k.method = pattern
		default:
			k.method = UnmatchedPattern
		}
		k.code = call.Status()
	}
	s, ok := c.series.Load(k)
	if !ok {
		s, _ = c.series.LoadOrStore(k, c.resolve(k))
	}
	es := s.(endSeries)
	es.handled.Inc()
	es.duration.Observe(time.Since(call.Start).Seconds())
}

// resolve returns the series of k.
func (c *calls) resolve(k seriesKey) endSeries {
	code := strconv.Itoa(k.code)
	if k.face == edge.GRPC || k.face == edge.BackendOut {
		code = codes.Code(k.code).String()
	}
	return endSeries{
		handled:  c.handled.WithLabelValues(string(k.face), k.route, k.method, code),
		duration: c.duration.WithLabelValues(string(k.face), k.route, k.method),
	}
}
