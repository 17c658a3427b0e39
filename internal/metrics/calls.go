package metrics

import (
	"context"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
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
var durationBuckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// durationBounds are durationBuckets in nanoseconds, which a call's
// duration is compared with.
var durationBounds = func() (b [len(durationBuckets)]int64) {
	for i, s := range durationBuckets {
		b[i] = int64(math.Round(s * 1e9))
	}
	return b
}()

// faces are the faces a call can have, in the order of faceIndex.
var faces = [...]edge.Face{edge.GRPC, edge.REST, edge.PixyREST, edge.HTTP, edge.BackendOut}

// faceIndex returns the index of f in faces, -1 for a face Ferry does not
// know.
func faceIndex(f edge.Face) int {
	switch f {
	case edge.GRPC:
		return 0
	case edge.REST:
		return 1
	case edge.PixyREST:
		return 2
	case edge.HTTP:
		return 3
	case edge.BackendOut:
		return 4
	}
	return -1
}

// Descriptions of the call metrics.
var (
	callsStarted  = desc("calls_started_total", "Calls that reached Ferry (or a back end's call that left it), by face.", "face")
	callsInFlight = desc("calls_in_flight", "Calls running now, by face.", "face")
	callsHandled  = desc("calls_handled_total", "Calls that ended, by face, route, method and code: the gRPC code as grpc-go names it, or the HTTP status of a REST call.", "face", "route", "method", "code")
	callDuration  = desc("call_duration_seconds", "How long calls took from reaching Ferry to their end, by face, route and method.", "face", "route", "method")
)

// calls counts the calls of every face. A call costs a few atomic
// additions of integers and one lookup of its series in a map no call
// writes: no label is resolved, no float added in a compare-and-swap loop
// (which calls running at once on many cores would retry), nothing
// allocated. Prometheus reads the counts when it scrapes (Collect).
type calls struct {
	known func(method string) bool
	faces [len(faces)]faceCalls
}

// faceCalls are the counts of one face.
type faceCalls struct {
	// started and ended count the calls that began and ended: their
	// difference is the calls in flight. Each has a cache line of its
	// own, as calls beginning and calls ending write them from different
	// cores.
	started atomic.Uint64
	_       [56]byte
	ended   atomic.Uint64
	_       [56]byte

	// series maps each (route, method, code) seen to its counts. It is
	// replaced, never changed: a call reads it without a lock. mu
	// serializes the replacements, durations is the duration histogram of
	// each (route, method), written under mu.
	series    atomic.Pointer[map[seriesKey]*endSeries]
	mu        sync.Mutex
	durations map[[2]string]*durationSeries
}

// seriesKey names the series a call ends in, within its face.
type seriesKey struct {
	route, method string
	code          int
}

// endSeries counts the calls of a face that ended on a route and method
// with a code.
type endSeries struct {
	code     string // the code label
	handled  atomic.Uint64
	duration *durationSeries
}

// durationSeries is the duration histogram of a face's calls on a route
// and method, whatever their code.
type durationSeries struct {
	route, method string
	// buckets count the calls by the first bound of durationBounds they
	// do not exceed; the last counts those that exceed them all.
	buckets  [len(durationBounds) + 1]atomic.Uint64
	sumNanos atomic.Uint64
}

// observe counts a call that took d.
func (s *durationSeries) observe(d time.Duration) {
	n := max(int64(d), 0)
	i := 0
	for i < len(durationBounds) && n > durationBounds[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(uint64(n))
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
	c := &calls{known: known}
	for i := range c.faces {
		c.faces[i].series.Store(&map[seriesKey]*endSeries{})
		c.faces[i].durations = map[[2]string]*durationSeries{}
	}
	r.reg.MustRegister(c)
	return edge.Interceptor{Begin: c.begin, End: c.end}
}

func (c *calls) begin(_ context.Context, call *edge.Call) (context.Context, error) {
	if i := faceIndex(call.Face); i >= 0 {
		c.faces[i].started.Add(1)
	}
	return nil, nil
}

func (c *calls) end(_ context.Context, call *edge.Call, err error) {
	i := faceIndex(call.Face)
	if i < 0 {
		return
	}
	f := &c.faces[i]
	f.ended.Add(1)
	// A method label taken as the call has it, found in the series, was
	// known when its series was made: the common case costs one lookup.
	// A name no series has yet is checked as the labels require.
	k := seriesKey{route: call.RouteName()}
	var rpc, pattern string
	switch call.Face {
	case edge.GRPC, edge.BackendOut:
		k.method = call.Method
		k.code = int(status.Code(err))
	default:
		// A REST call transcoded to Ferry's gRPC service is known by its
		// method; others by the pattern that served them.
		rpc, pattern = call.RPC(), call.Route()
		switch {
		case rpc != "":
			k.method = rpc
		case pattern != "":
			k.method = pattern
		default:
			k.method = UnmatchedPattern
		}
		k.code = call.Status()
	}
	s := (*f.series.Load())[k]
	if s == nil {
		switch call.Face {
		case edge.GRPC, edge.BackendOut:
			if !c.known(k.method) {
				k.method = UnknownMethod
			}
		default:
			if rpc != "" && !c.known(rpc) {
				k.method = pattern
				if pattern == "" {
					k.method = UnmatchedPattern
				}
			}
		}
		s = f.resolve(call.Face, k)
	}
	s.handled.Add(1)
	s.duration.observe(time.Since(call.Start))
}

// resolve returns the series of k, made if it is new.
func (f *faceCalls) resolve(face edge.Face, k seriesKey) *endSeries {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := *f.series.Load()
	if s := cur[k]; s != nil {
		return s
	}
	code := strconv.Itoa(k.code)
	if face == edge.GRPC || face == edge.BackendOut {
		code = codes.Code(k.code).String()
	}
	dk := [2]string{k.route, k.method}
	d := f.durations[dk]
	if d == nil {
		d = &durationSeries{route: k.route, method: k.method}
		f.durations[dk] = d
	}
	s := &endSeries{code: code, duration: d}
	next := make(map[seriesKey]*endSeries, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[k] = s
	f.series.Store(&next)
	return s
}

// Describe sends the descriptions of the call metrics.
func (c *calls) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{callsStarted, callsInFlight, callsHandled, callDuration} {
		ch <- d
	}
}

// Collect sends the counts of every face. A call may end while they are
// read, so in flight is read first and never counts below zero.
func (c *calls) Collect(ch chan<- prometheus.Metric) {
	for i := range c.faces {
		f := &c.faces[i]
		face := string(faces[i])
		ended := f.ended.Load()
		started := f.started.Load()
		ch <- prometheus.MustNewConstMetric(callsStarted, prometheus.CounterValue, float64(started), face)
		ch <- prometheus.MustNewConstMetric(callsInFlight, prometheus.GaugeValue, float64(started-min(ended, started)), face)
		for k, s := range *f.series.Load() {
			ch <- prometheus.MustNewConstMetric(callsHandled, prometheus.CounterValue, float64(s.handled.Load()), face, k.route, k.method, s.code)
		}
		f.mu.Lock()
		ds := make([]*durationSeries, 0, len(f.durations))
		for _, d := range f.durations {
			ds = append(ds, d)
		}
		f.mu.Unlock()
		for _, d := range ds {
			ch <- d.metric(face)
		}
	}
}

// metric is d as Prometheus' histogram of face.
func (d *durationSeries) metric(face string) prometheus.Metric {
	cumulative := make(map[float64]uint64, len(durationBuckets))
	var count uint64
	for i, ub := range durationBuckets {
		count += d.buckets[i].Load()
		cumulative[ub] = count
	}
	count += d.buckets[len(durationBuckets)].Load()
	sum := float64(d.sumNanos.Load()) / 1e9
	return prometheus.MustNewConstHistogram(callDuration, count, sum, cumulative, face, d.route, d.method)
}

var _ prometheus.Collector = (*calls)(nil)
