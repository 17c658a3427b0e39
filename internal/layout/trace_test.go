package layout

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestRequestTrace: a request's Trace replaces the caller's traceparent and
// tracestate metadata, is written once, and is read back; without one,
// the caller's entries travel as any metadata.
func TestRequestTrace(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	md := metadata.Pairs("traceparent", "00-caller", "tracestate", "caller=1", "x-other", "v")
	r := Request{Service: "s.S", Method: "M", ReplyTo: "rep", CorrelationID: "id"}
	count := func(hs []kgo.RecordHeader) map[string][]string {
		m := map[string][]string{}
		for _, h := range hs {
			m[h.Key] = append(m[h.Key], string(h.Value))
		}
		return m
	}

	plain := count(l.RequestHeaders(nil, r, md, false))
	if got := plain["meta:traceparent"]; len(got) != 1 || got[0] != "00-caller" {
		t.Errorf("without a trace, meta:traceparent = %q, want the caller's", got)
	}

	r.Trace = Trace{Parent: "00-ferry", State: "ferry=1"}
	hs := l.RequestHeaders(nil, r, md, false)
	traced := count(hs)
	if got := traced["meta:traceparent"]; len(got) != 1 || got[0] != "00-ferry" {
		t.Errorf("meta:traceparent = %q, want [00-ferry]", got)
	}
	if got := traced["meta:tracestate"]; len(got) != 1 || got[0] != "ferry=1" {
		t.Errorf("meta:tracestate = %q, want [ferry=1]", got)
	}
	if got := traced["meta:x-other"]; len(got) != 1 {
		t.Errorf("meta:x-other = %q: other metadata must still travel", got)
	}
	if got := l.RequestTrace(hs); got != r.Trace {
		t.Errorf("RequestTrace = %+v, want %+v", got, r.Trace)
	}
	if got := RecordTrace(hs); got != (Trace{}) {
		t.Errorf("RecordTrace of a request = %+v, want none (its headers are meta:)", got)
	}

	reply := AppendReplyTrace(nil, Trace{Parent: "00-back"})
	if len(reply) != 1 || RecordTrace(reply).Parent != "00-back" {
		t.Errorf("reply trace headers %v", reply)
	}
	if hs := AppendReplyTrace(nil, Trace{}); len(hs) != 0 {
		t.Errorf("an empty trace wrote %v", hs)
	}
}
