// Package layout is Ferry's record layout on Kafka, the one Zilla's
// grpc-kafka and kafka-grpc bindings use: the header names, how a call's
// correlation id is made and read, the request records a front end writes
// and a back end reads, the reply records and the final status record a back
// end writes and a front end reads, and how gRPC metadata travels as meta:
// headers. Every capability writes and reads records through it, so each
// rule of the layout is written once.
//
// Where Ferry's records still differ from Zilla's, each difference is one
// function here: writtenKey (grpc-* keys other than grpc-accept-encoding
// are not written), sortedKeys (meta: headers are sorted by key),
// appendValues (a repeated key gives one header per value) and
// finalMetadata (the final reply record carries the trailers, and the
// response header metadata when no reply record did).
package layout

import (
	"crypto/md5"
	"encoding/hex"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// Metadata entries with a meaning in the layout.
const (
	// IdempotencyKey is the request metadata entry whose value becomes the
	// correlation id's prefix, so a retried call finds its earlier replies.
	// A back end passes it on to its server, or the correlation id when the
	// client sent none.
	IdempotencyKey = "idempotency-key"
	// CorrelationIDMetadata carries a call's correlation id in the metadata
	// a back end calls its server with, so the server can recognize a
	// request redone after a crash or rebalance.
	CorrelationIDMetadata = "ferry-correlation-id"
)

// StatusNoMethod is the status a back end answers a request record that
// names no service or method with (INTERNAL, 13), as Zilla does.
const StatusNoMethod = codes.Internal

// noMethodMessage is the message of a StatusNoMethod reply.
const noMethodMessage = "request names no service or method"

// Layout writes and reads records with one set of header names: a produce
// route's or a back end's header_names.
type Layout struct {
	names config.HeaderNames
}

// New returns the layout with the given header names, which must all be
// set (config fills unset ones with Zilla's).
func New(names config.HeaderNames) Layout { return Layout{names: names} }

// CorrelationSuffix is the md5 half of a correlation id, as Zilla computes
// it: the hex md5 of, when the route has a reply topic, each of the
// service, method and reply-to header names followed by its value, then the
// value of every override in order. Names of overrides are not hashed. It
// depends only on the route and the method, so a route computes it once
// per method.
func (l Layout) CorrelationSuffix(service, method, replyTo string, overrides config.Headers) string {
	h := md5.New()
	if replyTo != "" {
		n := l.names
		for _, s := range []string{n.Service, service, n.Method, method, n.ReplyTo, replyTo} {
			h.Write([]byte(s))
		}
	}
	for _, o := range overrides {
		h.Write([]byte(o.Value))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func init() {
	// A call's correlation id starts with a random UUID. Read one at a
	// time, each costs a getrandom call on the call's own goroutine, whose
	// small stack the call grows and copies (4 % of a unary call's CPU);
	// the pool reads 256 random bytes at a time, under a lock.
	uuid.EnableRandPool()
}

// CorrelationPrefix is the first half of a call's correlation id: the
// client's idempotency-key when it sent a non-empty one (idempotent is then
// true), else a random UUIDv4.
func CorrelationPrefix(md metadata.MD) (prefix string, idempotent bool) {
	if v := md.Get(IdempotencyKey); len(v) > 0 && v[0] != "" {
		return v[0], true
	}
	return uuid.NewString(), false
}

// CorrelationID joins the two halves of a correlation id.
func CorrelationID(prefix, suffix string) string { return prefix + "-" + suffix }

// RequestKey is the key of a call's request records: the route's key when
// it has one, else the correlation id. All records of a call share it, so
// they land on one partition, in order.
func RequestKey(routeKey, correlationID string) []byte {
	if routeKey != "" {
		return []byte(routeKey)
	}
	return []byte(correlationID)
}

// OverrideHeaders are a route's overrides as the headers written first on
// each of its request records, in configuration order.
func OverrideHeaders(overrides config.Headers) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for _, o := range overrides {
		hs = append(hs, kgo.RecordHeader{Key: o.Name, Value: []byte(o.Value)})
	}
	return hs
}
