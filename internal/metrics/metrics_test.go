package metrics

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/backend"
	"github.com/ferryproxy/ferry/internal/edge"
)

const echo = "/grpc.examples.echo.Echo/UnaryEcho"

func known(m string) bool { return m == echo }

// TestCallsLabels: a call is counted under its face, route, method and
// code; a method no proto defines collapses into "unknown"; in flight
// returns to zero.
func TestCallsLabels(t *testing.T) {
	r := New()
	in := r.Calls(known)
	run := func(method, route string, err error) {
		c := edge.NewCall(edge.GRPC, method, nil)
		ctx := context.Background()
		if _, e := in.Begin(ctx, c); e != nil {
			t.Fatal(e)
		}
		if route != "" {
			c.SetRouteName(route)
		}
		in.End(ctx, c, err)
	}
	run(echo, "echo", nil)
	run(echo, "echo", nil)
	run(echo, "echo", status.Error(codes.Unavailable, "down"))
	run("/made.Up/Name1", "", status.Error(codes.Unimplemented, "no"))
	run("/made.Up/Name2", "", status.Error(codes.Unimplemented, "no"))

	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"grpc", "echo", echo, "OK"}, 2},
		{[]string{"grpc", "echo", echo, "Unavailable"}, 1},
		{[]string{"grpc", "", UnknownMethod, "Unimplemented"}, 2},
	} {
		mfs, err := r.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		for _, mf := range mfs {
			if mf.GetName() != "ferry_calls_handled_total" {
				continue
			}
			want := map[string]string{"face": tc.labels[0], "route": tc.labels[1], "method": tc.labels[2], "code": tc.labels[3]}
		metric:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if want[lp.GetName()] != lp.GetValue() {
						continue metric
					}
				}
				got += m.GetCounter().GetValue()
			}
		}
		if got != tc.want {
			t.Errorf("ferry_calls_handled_total%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(r.reg, "ferry_calls_handled_total"); n != 3 {
		t.Errorf("%d series of ferry_calls_handled_total, want 3", n)
	}
}

// TestCallDuration: a call's duration lands in the first bucket it does
// not exceed, in flight counts the calls begun and not ended.
func TestCallDuration(t *testing.T) {
	r := New()
	in := r.Calls(known)
	ctx := context.Background()
	open := edge.NewCall(edge.GRPC, echo, nil)
	if _, err := in.Begin(ctx, open); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{30 * time.Millisecond, 400 * time.Second} {
		c := edge.NewCall(edge.GRPC, echo, nil)
		c.Start = time.Now().Add(-d)
		if _, err := in.Begin(ctx, c); err != nil {
			t.Fatal(err)
		}
		c.SetRouteName("echo")
		in.End(ctx, c, nil)
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "ferry_call_duration_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != 2 || h.GetSampleSum() < 400.03 || h.GetSampleSum() > 401 {
				t.Errorf("count %d, sum %v: want 2 and 400.03 s or a little more", h.GetSampleCount(), h.GetSampleSum())
			}
			for _, b := range h.GetBucket() {
				want := uint64(0)
				if b.GetUpperBound() >= .05 {
					want = 1
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("bucket le=%v counts %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
		case "ferry_calls_in_flight", "ferry_calls_started_total":
			want := map[string]float64{"ferry_calls_in_flight": 1, "ferry_calls_started_total": 3}[mf.GetName()]
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() != "grpc" {
					continue
				}
				if got := m.GetGauge().GetValue() + m.GetCounter().GetValue(); got != want {
					t.Errorf("%s{face=grpc} = %v, want %v", mf.GetName(), got, want)
				}
			}
		}
	}
}

// TestKafkaHookBeforeClients: a cluster's hook without a client yet
// collects nothing and does not fail the scrape.
func TestKafkaHookBeforeClients(t *testing.T) {
	r := New()
	r.KafkaHook("a")
	r.KafkaHook("b")
	if _, err := r.reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCalls is the interceptor's own cost on a unary call: Begin
// and End, the series already resolved.
func BenchmarkCalls(b *testing.B) {
	in := New().Calls(known)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c := edge.NewCall(edge.GRPC, echo, nil)
		_, _ = in.Begin(ctx, c)
		c.SetRouteName("echo")
		in.End(ctx, c, nil)
	}
}

// BenchmarkCallsParallel is BenchmarkCalls with 64 calls at once on
// every core, the series shared: what calls running together cost each
// other.
func BenchmarkCallsParallel(b *testing.B) {
	in := New().Calls(known)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(64 / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := edge.NewCall(edge.GRPC, echo, nil)
			_, _ = in.Begin(ctx, c)
			c.SetRouteName("echo")
			in.End(ctx, c, nil)
		}
	})
}

// TestProduceRouteSeries: a route measured again (a reload) counts on in
// the same series, and routes do not share theirs.
func TestProduceRouteSeries(t *testing.T) {
	r := New()
	r.ProduceRoute("a").Requests.Inc()
	r.ProduceRoute("a").Requests.Inc()
	b := r.ProduceRoute("b")
	b.Responses.Inc()
	b.FirstReply.Observe(0.01)
	for _, tc := range []struct {
		name, route string
		want        float64
	}{
		{"ferry_produce_request_messages_total", "a", 2},
		{"ferry_produce_request_messages_total", "b", 0},
		{"ferry_produce_response_messages_total", "b", 1},
	} {
		vec := r.routes.requests
		if tc.name == "ferry_produce_response_messages_total" {
			vec = r.routes.responses
		}
		if got := testutil.ToFloat64(vec.WithLabelValues(tc.route)); got != tc.want {
			t.Errorf("%s{route=%q} = %v, want %v", tc.name, tc.route, got, tc.want)
		}
	}
	req, resp := r.ProduceRoute("a").Bytes(echo)
	req.Add(3)
	resp.Add(5)
	req, _ = r.ProduceRoute("a").Bytes(echo)
	req.Add(4)
	if got := testutil.ToFloat64(r.routes.requestBytes.WithLabelValues("a", echo)); got != 7 {
		t.Errorf("ferry_produce_request_bytes_total{route=a} = %v, want 7", got)
	}
	if got := testutil.ToFloat64(r.routes.responseBytes.WithLabelValues("a", echo)); got != 5 {
		t.Errorf("ferry_produce_response_bytes_total{route=a} = %v, want 5", got)
	}
	if n := testutil.CollectAndCount(r.reg, "ferry_produce_first_reply_seconds"); n != 2 {
		t.Errorf("%d series of ferry_produce_first_reply_seconds, want 2", n)
	}
}

// TestWatchLag: a back end's lag is a series per partition it reports.
func TestWatchLag(t *testing.T) {
	r := New()
	r.Watch(Sources{Backends: func() map[string]backend.Stats {
		return map[string]backend.Stats{"echo": {Lag: map[int32]int64{0: 3, 1: 0}}}
	}})
	if n := testutil.CollectAndCount(r.reg, "ferry_backend_lag_records"); n != 2 {
		t.Errorf("%d series of ferry_backend_lag_records, want 2", n)
	}
	want := `
# HELP ferry_backend_lag_records Records of a partition a back end owns not finished yet: the high watermark at its last fetch less the offset it commits next.
# TYPE ferry_backend_lag_records gauge
ferry_backend_lag_records{backend="echo",partition="0"} 3
ferry_backend_lag_records{backend="echo",partition="1"} 0
`
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(want), "ferry_backend_lag_records"); err != nil {
		t.Error(err)
	}
}
