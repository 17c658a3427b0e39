package layout

import (
	"github.com/twmb/franz-go/pkg/kgo"
)

// The W3C Trace Context entries a trace crosses Kafka in. On request
// records they are meta: headers (meta:traceparent, meta:tracestate), as a
// caller's own metadata of these names would be: a Zilla back end passes
// them to its server as metadata, and a Ferry back end continues the trace
// from them. On reply records they are plain headers, which no front end
// turns into response metadata.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// Trace is a W3C trace context as its two headers carry it; Parent is
// empty when there is none.
type Trace struct {
	Parent string
	State  string
}

// isTraceKey reports whether metadata key k is one of the trace context's.
func isTraceKey(k string) bool { return k == TraceParent || k == TraceState }

// appendTrace appends t's headers named prefix+traceparent and
// prefix+tracestate (the latter only when set).
func appendTrace(hs []kgo.RecordHeader, prefix string, t Trace) []kgo.RecordHeader {
	hs = append(hs, kgo.RecordHeader{Key: prefix + TraceParent, Value: []byte(t.Parent)})
	if t.State != "" {
		hs = append(hs, kgo.RecordHeader{Key: prefix + TraceState, Value: []byte(t.State)})
	}
	return hs
}

// traceOf reads the trace context from the headers named
// prefix+traceparent and prefix+tracestate; the last of a repeated header
// counts.
func traceOf(hs []kgo.RecordHeader, prefix string) Trace {
	var t Trace
	for _, h := range hs {
		if len(h.Key) != len(prefix)+len(TraceParent) && len(h.Key) != len(prefix)+len(TraceState) {
			continue
		}
		switch h.Key {
		case prefix + TraceParent:
			t.Parent = string(h.Value)
		case prefix + TraceState:
			t.State = string(h.Value)
		}
	}
	return t
}

// RequestTrace reads the trace context a request record carries in its
// meta:traceparent and meta:tracestate headers.
func (l Layout) RequestTrace(hs []kgo.RecordHeader) Trace { return traceOf(hs, l.names.MetaPrefix) }

// AppendReplyTrace appends t to a reply record's headers as plain
// traceparent and tracestate headers, when t has a parent.
func AppendReplyTrace(hs []kgo.RecordHeader, t Trace) []kgo.RecordHeader {
	if t.Parent == "" {
		return hs
	}
	return appendTrace(hs, "", t)
}

// RecordTrace reads the trace context a record carries in plain
// traceparent and tracestate headers, as OpenTelemetry's Kafka
// instrumentations write them and Ferry's reply records carry them.
func RecordTrace(hs []kgo.RecordHeader) Trace { return traceOf(hs, "") }
