// Package produce is Ferry's gRPC → Kafka capability: it writes each request
// message of a call as a record on the route's topic, in the record layout
// Zilla's grpc-kafka binding uses, and streams back the replies that arrive
// on the reply topic for the call's correlation id.
package produce

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/layout"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/valueformat"
)

// Route is one configured produce route, ready to serve calls.
type Route struct {
	Name     string
	rt       *Runtime
	cfg      *config.ProduceRoute
	producer *kgo.Client
	layout   layout.Layout
	// reader is the reply topic's shared reader; nil on one-way routes.
	reader *Reader
	// overrides are the route's fixed headers, written first on every
	// record.
	overrides []kgo.RecordHeader
	// suffixes holds, per method path, the md5 half of the correlation id,
	// which depends only on the route and the method.
	suffixes map[string]string
	// fields holds, per method path, what the route reads from request
	// messages; no entry when it reads nothing.
	fields map[string]*requestFields
	// format converts request and reply values to and from JSON; nil when
	// the route's format is protobuf, whose values pass as they are.
	format *valueformat.Format
	// replyLimit bounds the replies queued for one call.
	replyLimit int
	// meter counts the route's messages; its fields are nil unless
	// metrics are on.
	meter Meter
}

// Meter is where a route counts what its calls do. A nil field counts
// nothing.
type Meter struct {
	// Requests counts the request messages written to Kafka, Responses
	// the response messages sent to callers.
	Requests, Responses Counter
	// FirstReply observes, once per call of a request-reply route, the
	// seconds from the call reaching the route to its first response
	// message sent.
	FirstReply Observer
	// Bytes returns, once per call, the counts of the request and the
	// response message bytes of the route's calls of a method.
	Bytes func(method string) (request, response Adder)
}

// Counter is a count that only goes up (a Prometheus counter).
type Counter interface{ Inc() }

// Adder is a count that goes up by an amount (a Prometheus counter).
type Adder interface{ Add(float64) }

// Observer records one value of a distribution (a Prometheus histogram).
type Observer interface{ Observe(float64) }

// Measure makes the route count into m. Call it before the route serves.
func (r *Route) Measure(m Meter) { r.meter = m }

// NewRoute prepares a route. reader is nil for a one-way route.
func NewRoute(rt *Runtime, name string, cfg *config.ProduceRoute, producer *kgo.Client, reader *Reader, replyLimit int) *Route {
	return &Route{
		rt: rt, Name: name, cfg: cfg, producer: producer, reader: reader,
		layout:     layout.New(cfg.HeaderNames),
		overrides:  layout.OverrideHeaders(cfg.Overrides),
		suffixes:   map[string]string{},
		fields:     map[string]*requestFields{},
		replyLimit: replyLimit,
	}
}

// Bind computes the md5 half of the correlation id of m's calls.
func (r *Route) Bind(m *protoreg.Method) error {
	r.suffixes[m.Path] = r.layout.CorrelationSuffix(m.Service, m.Name, r.cfg.ReplyTo, r.cfg.Overrides)
	f, err := newRequestFields(r.cfg, m.Desc.Input())
	if err != nil {
		return fmt.Errorf("route %s, method %s: %w", r.Name, m.Path, err)
	}
	if r.cfg.Format == config.FormatJSON {
		if r.format == nil {
			if r.format, err = valueformat.New(r.cfg.Format, r.cfg.JSON); err != nil {
				return fmt.Errorf("route %s: %w", r.Name, err)
			}
		}
		if f == nil {
			// Every request message is decoded to be written as JSON,
			// once, as for the fields the route reads.
			f = &requestFields{in: m.Desc.Input()}
		}
	}
	if f != nil {
		r.fields[m.Path] = f
	}
	return nil
}

// timeout returns the route's reply timeout; zero means none.
func (r *Route) timeout() time.Duration { return r.cfg.Timeout }
