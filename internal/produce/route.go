// Package produce is Ferry's gRPC → Kafka capability: it writes each request
// message of a call as a record on the route's topic, in the record layout
// Zilla's grpc-kafka binding uses, and streams back the replies that arrive
// on the reply topic for the call's correlation id.
package produce

import (
	"crypto/md5"
	"encoding/hex"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Route is one configured produce route, ready to serve calls.
type Route struct {
	Name     string
	rt       *Runtime
	cfg      *config.ProduceRoute
	producer *kgo.Client
	// reader is the reply topic's shared reader; nil on one-way routes.
	reader *Reader
	// overrides are the route's fixed headers, written first on every
	// record.
	overrides []kgo.RecordHeader
	// suffixes holds, per method path, the md5 half of the correlation id,
	// which depends only on the route and the method.
	suffixes map[string]string
	// replyLimit bounds the replies queued for one call.
	replyLimit int
}

// NewRoute prepares a route. reader is nil for a one-way route.
func NewRoute(rt *Runtime, name string, cfg *config.ProduceRoute, producer *kgo.Client, reader *Reader, replyLimit int) *Route {
	r := &Route{rt: rt, Name: name, cfg: cfg, producer: producer, reader: reader, suffixes: map[string]string{}, replyLimit: replyLimit}
	for _, o := range cfg.Overrides {
		r.overrides = append(r.overrides, kgo.RecordHeader{Key: o.Name, Value: []byte(o.Value)})
	}
	return r
}

// Bind computes the md5 half of the correlation id of m's calls.
func (r *Route) Bind(m *protoreg.Method) error {
	r.suffixes[m.Path] = CorrelationSuffix(r.cfg.HeaderNames, m.Service, m.Name, r.cfg.ReplyTo, r.cfg.Overrides)
	return nil
}

// timeout returns the route's reply timeout; zero means none.
func (r *Route) timeout() time.Duration { return r.cfg.Timeout }

// CorrelationSuffix is the md5 half of a correlation id, as Zilla computes
// it: the hex md5 of, when the route has a reply topic, each of the service,
// method and reply-to header names followed by its value, then the value of
// every override in order. Names of overrides are not hashed.
func CorrelationSuffix(names config.HeaderNames, service, method, replyTo string, overrides config.Headers) string {
	h := md5.New()
	if replyTo != "" {
		for _, s := range []string{names.Service, service, names.Method, method, names.ReplyTo, replyTo} {
			h.Write([]byte(s))
		}
	}
	for _, o := range overrides {
		h.Write([]byte(o.Value))
	}
	return hex.EncodeToString(h.Sum(nil))
}
