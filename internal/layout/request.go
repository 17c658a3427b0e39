package layout

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

// Request is what the request records of one call say about it, besides
// their values: a front end writes it on every record of the call, a back
// end reads it from each.
type Request struct {
	// Service is the full service name, "package.Service".
	Service string
	// Method is the method name.
	Method string
	// ReplyTo is the reply topic. It is empty on a one-way route, whose
	// records carry none of the four headers of this struct.
	ReplyTo string
	// CorrelationID ties the call's request and reply records together.
	CorrelationID string
	// Trace, when it has a parent, is written as meta:traceparent and
	// meta:tracestate in place of the caller's metadata of those names.
	// ParseRequest leaves it empty: RequestTrace reads it.
	Trace Trace
}

// Path is the gRPC method path, "/package.Service/Method".
func (r Request) Path() string { return "/" + r.Service + "/" + r.Method }

// RequestHeaders lays out the headers every request record of a call
// carries, in order: the route's overrides (see OverrideHeaders); when the
// call has a reply topic, service, method, reply-to and correlation id;
// then the request metadata md as meta: headers, and r.Trace when it has a
// parent (see Trace). Transport metadata is never written, and
// authorization only with forwardAuthorization, so credentials do not land
// in Kafka by default.
//
// The end of the request stream is one more record with the same key and
// headers and a null value; one-way routes write none.
func (l Layout) RequestHeaders(overrides []kgo.RecordHeader, r Request, md metadata.MD, forwardAuthorization bool) []kgo.RecordHeader {
	n := l.names
	hs := make([]kgo.RecordHeader, 0, len(overrides)+4+len(md))
	hs = append(hs, overrides...)
	if r.ReplyTo != "" {
		hs = append(hs,
			kgo.RecordHeader{Key: n.Service, Value: []byte(r.Service)},
			kgo.RecordHeader{Key: n.Method, Value: []byte(r.Method)},
			kgo.RecordHeader{Key: n.ReplyTo, Value: []byte(r.ReplyTo)},
			kgo.RecordHeader{Key: n.CorrelationID, Value: []byte(r.CorrelationID)},
		)
	}
	if r.Trace.Parent == "" {
		return appendMetadata(hs, md, n.MetaPrefix, func(k string) bool {
			return forwarded(k, forwardAuthorization)
		})
	}
	hs = appendMetadata(hs, md, n.MetaPrefix, func(k string) bool {
		return forwarded(k, forwardAuthorization) && !isTraceKey(k)
	})
	return appendTrace(hs, n.MetaPrefix, r.Trace)
}

// forwarded reports whether a request metadata entry travels as a meta:
// header: transport entries never do, authorization only when the route
// allows it.
func forwarded(k string, authorization bool) bool {
	return writtenKey(k) && (k != "authorization" || authorization)
}

// ParseRequest reads the layout headers of a request record. The last of
// a repeated header counts. A record without a correlation id is not a
// request of the layout; one without a service or method is answered with
// NoMethodRecord.
func (l Layout) ParseRequest(hs []kgo.RecordHeader) Request {
	n := l.names
	var r Request
	for _, h := range hs {
		switch h.Key {
		case n.CorrelationID:
			r.CorrelationID = string(h.Value)
		case n.Service:
			r.Service = string(h.Value)
		case n.Method:
			r.Method = string(h.Value)
		case n.ReplyTo:
			r.ReplyTo = string(h.Value)
		}
	}
	return r
}

// ServerMetadata is the metadata a back end calls its server with for a
// request record with headers hs and correlation id id: the record's meta:
// headers, plus ferry-correlation-id and, unless the client sent its own,
// idempotency-key, both set to id.
func (l Layout) ServerMetadata(hs []kgo.RecordHeader, id string) metadata.MD {
	md := MetadataFromHeaders(hs, l.names.MetaPrefix)
	md.Set(CorrelationIDMetadata, id)
	if len(md.Get(IdempotencyKey)) == 0 {
		md.Set(IdempotencyKey, id)
	}
	return md
}
