// Package produce is Ferry's gRPC → Kafka capability: it writes each request
// message of a call as a record on the route's topic, in the record layout
// Zilla's grpc-kafka binding uses, and streams back the replies that arrive
// on the reply topic for the call's correlation id.
package produce

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Route is one configured produce route, ready to serve calls.
type Route struct {
	Name     string
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
func NewRoute(name string, cfg *config.ProduceRoute, producer *kgo.Client, reader *Reader, replyLimit int) *Route {
	r := &Route{Name: name, cfg: cfg, producer: producer, reader: reader, suffixes: map[string]string{}, replyLimit: replyLimit}
	for _, o := range cfg.Overrides {
		r.overrides = append(r.overrides, kgo.RecordHeader{Key: o.Name, Value: []byte(o.Value)})
	}
	return r
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

// Table finds the route of a call: for each method, the routes whose
// conditions name it, in configuration order; the first whose metadata
// matches wins.
type Table struct {
	byMethod map[string][]candidate
}

type candidate struct {
	route    *Route
	metadata map[string]string
}

// NewTable builds the table. It returns an error naming each condition that
// matches no loaded method, located by its YAML path.
func NewTable(cfg *config.Config, reg *protoreg.Registry, routes map[string]*Route) (*Table, error) {
	t := &Table{byMethod: map[string][]candidate{}}
	var errs config.Errors
	for i, rc := range cfg.Routes {
		r := routes[rc.Name]
		for j, w := range rc.When {
			ms := reg.Match(w.Method)
			if len(ms) == 0 {
				errs = append(errs, cfg.Errorf(fmt.Sprintf("routes[%d].when[%d].method", i, j),
					"no loaded proto defines a method matching %q: check the name and the protos section", w.Method))
				continue
			}
			for _, m := range ms {
				t.byMethod[m.Path] = append(t.byMethod[m.Path], candidate{route: r, metadata: w.Metadata})
				if _, ok := r.suffixes[m.Path]; !ok {
					r.suffixes[m.Path] = CorrelationSuffix(rc.Produce.HeaderNames, m.Service, m.Name, rc.Produce.ReplyTo, rc.Produce.Overrides)
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return t, nil
}

// Match returns the route for a call of method path with metadata md.
// Every metadata entry a condition lists must be present with that value.
func (t *Table) Match(path string, md metadata.MD) *Route {
	for _, c := range t.byMethod[path] {
		if matchMetadata(c.metadata, md) {
			return c.route
		}
	}
	return nil
}

// Routed reports whether any route names the method, whatever its metadata.
func (t *Table) Routed(path string) bool { return len(t.byMethod[path]) > 0 }

func matchMetadata(want map[string]string, md metadata.MD) bool {
	for k, v := range want {
		found := false
		for _, got := range md.Get(k) {
			if got == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
