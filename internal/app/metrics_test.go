package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// scrape reads and parses the admin listener's /metrics.
func scrape(t testing.TB, a *app.App) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// sample sums the samples of family name whose labels include labels: a
// counter's or gauge's value, a histogram's count. It reports whether any
// matched.
func sample(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// get fetches path from the admin listener and returns its status and
// body.
func get(t testing.TB, a *app.App, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsAfterTraffic serves known traffic — a produce route through a
// back end, a fetch route, Ferry's Kafka API over gRPC and REST,
// Kafka-Pixy's REST, a method no proto defines — and finds each call
// counted once under bounded labels in /metrics, with the back end's,
// the fetch hubs', the reply cache's and the Kafka clients' series.
// /healthz and /readyz answer 200, and the profiler is off.
func TestMetricsAfterTraffic(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo-1")
	req, rep, fetched, topic := kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil), kit.Topic(t, 1, nil)
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}
  http: {address: "127.0.0.1:0"}
  admin: {address: "127.0.0.1:0"}
protos:
  - files: [echo.proto]
    import_paths: [%q]
  - files: [fanout.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
kafka_api:
  enabled: true
  pixy: true
routes:
%s%s`, kit.ClusterYAML(t), filepath.Join(root(t), "examples", "echo"), filepath.Join(root(t), "examples", "fanout"),
		fetchRoute(fetched, ""), proxyConfig(t, req, rep, srv.addr, ""))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 60*time.Second)
	cc := dial(t, a)

	for range 2 {
		if res := call(ctx, cc, "UnaryEcho", nil, "hi"); res.err != nil {
			t.Fatal(res.err)
		}
	}
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, fetched, "k", nil, "a")
	sub := subscribe(t, cc, nil)
	sub.take(t, 1)
	// Caught up, the caller reads from the hub.
	produceMsgs(t, prod, fetched, "k", nil, "b")
	sub.take(t, 1)
	sub.cancel()
	api := dialAddr(t, a.GRPCAddr())
	if _, err := kafkav1.NewKafkaClient(api).Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String("one")}); err != nil {
		t.Fatal(err)
	}
	err = api.Invoke(ctx, "/no.such.Service/Call", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v, want UNIMPLEMENTED", err)
	}
	base := "http://" + a.HTTPAddr()
	for _, r := range []struct{ path, body string }{
		{"/v1/clusters/default/topics/" + topic + "/records", `{"valueText": "two"}`},
		{"/topics/" + topic + "/messages?sync", "three"},
	} {
		resp, err := http.Post(base+r.path, "application/json", strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %s", r.path, resp.Status)
		}
	}

	const echo, fanout = "/grpc.examples.echo.Echo/UnaryEcho", "/example.FanoutService/FanoutServerStream"
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"ferry_calls_handled_total", map[string]string{"face": "grpc", "route": "route-1", "method": echo, "code": "OK"}, 2},
		{"ferry_call_duration_seconds", map[string]string{"face": "grpc", "route": "route-1", "method": echo}, 2},
		{"ferry_calls_handled_total", map[string]string{"face": "grpc", "route": "route-0", "method": fanout, "code": "Canceled"}, 1},
		{"ferry_calls_handled_total", map[string]string{"face": "grpc", "route": "", "method": "/ferry.kafka.v1.Kafka/Produce", "code": "OK"}, 1},
		{"ferry_calls_handled_total", map[string]string{"face": "grpc", "route": "", "method": "unknown", "code": "Unimplemented"}, 1},
		{"ferry_calls_handled_total", map[string]string{"face": "rest", "route": "", "method": "/ferry.kafka.v1.Kafka/Produce", "code": "200"}, 1},
		{"ferry_calls_handled_total", map[string]string{"face": "pixy-rest", "method": "POST /topics/{topic}/messages", "code": "200"}, 1},
		{"ferry_calls_handled_total", map[string]string{"face": "backend-out", "method": echo, "code": "OK"}, 2},
		{"ferry_calls_started_total", map[string]string{"face": "grpc"}, 5},
		{"ferry_calls_started_total", map[string]string{"face": "rest"}, 1},
		{"ferry_calls_in_flight", map[string]string{"face": "grpc"}, 0},
		{"ferry_backend_calls_open", map[string]string{"backend": "echo"}, 0},
		{"ferry_backend_partitions", map[string]string{"backend": "echo"}, 1},
		{"ferry_backend_assignments_total", map[string]string{"backend": "echo"}, 1},
		{"ferry_backend_retries_total", map[string]string{"backend": "echo"}, 0},
		{"ferry_backend_revokes_total", map[string]string{"backend": "echo"}, 0},
		{"ferry_backend_losses_total", map[string]string{"backend": "echo"}, 0},
		// Every request finished: the back end caught up.
		{"ferry_backend_lag_records", map[string]string{"backend": "echo", "partition": "0"}, 0},
		{"ferry_produce_request_messages_total", map[string]string{"route": "route-1"}, 2},
		{"ferry_produce_response_messages_total", map[string]string{"route": "route-1"}, 2},
		{"ferry_produce_first_reply_seconds", map[string]string{"route": "route-1"}, 2},
		// Two calls of EchoRequest{message: "hi"}, each answered with
		// EchoResponse{message: "hi"}: the same bytes each way.
		{"ferry_produce_request_bytes_total", map[string]string{"route": "route-1", "method": echo}, float64(2 * len(testkit.Echo("hi")))},
		{"ferry_produce_response_bytes_total", map[string]string{"route": "route-1", "method": echo}, float64(2 * len(testkit.Echo("hi")))},
		{"ferry_fetch_subscribers", nil, 0},
		{"ferry_fetch_cut_offs_total", nil, 0},
		{"ferry_replies_pending", nil, 0},
		{"ferry_kafka_api_members", nil, 0},
	}
	// The fetch call ends on its own goroutine after the cancel: wait
	// for the counts to settle.
	deadline := time.Now().Add(20 * time.Second)
	var mfs map[string]*dto.MetricFamily
	for {
		mfs = scrape(t, a)
		var bad []string
		for _, w := range want {
			got, ok := sample(mfs, w.name, w.labels)
			if !ok || got != w.value {
				bad = append(bad, fmt.Sprintf("%s%v = %v (found %v), want %v", w.name, w.labels, got, ok, w.value))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the traffic:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, _ := sample(mfs, "ferry_fetch_records_total", nil); got < 1 {
		t.Errorf("ferry_fetch_records_total = %v, want at least 1", got)
	}
	// The Kafka clients, the reply cache, the Go runtime.
	for _, w := range []struct {
		name   string
		labels map[string]string
	}{
		{"ferry_kafka_produce_records_total", map[string]string{"cluster": "default"}},
		{"ferry_kafka_connects_total", map[string]string{"cluster": "default"}},
		{"ferry_replies_cached_bytes", nil},
		{"go_goroutines", nil},
	} {
		if got, ok := sample(mfs, w.name, w.labels); !ok || (strings.HasSuffix(w.name, "_total") && got == 0) {
			t.Errorf("%s%v = %v (found %v), want a sample", w.name, w.labels, got, ok)
		}
	}
	// No label carries a key, a topic of a call or a caller's method.
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "ferry_call") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "no.such") || strings.Contains(lp.GetValue(), topic) {
					t.Errorf("%s has label %s=%q", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}

	if code, _ := get(t, a, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if code, body := get(t, a, "/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz: %d %s, want 200 ready", code, body)
	}
	if code, _ := get(t, a, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ with pprof off: %d, want 404", code)
	}
}

// TestReadyFollowsKafka: /readyz answers 503, naming the cluster, while
// the broker is away, and 200 again once it is back; /healthz stays 200.
func TestReadyFollowsKafka(t *testing.T) {
	o := newOutage(t)
	topic := "ferry-test-ready-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	y := fmt.Sprintf(`
clusters:
  - name: default
    brokers: [%q]
    dial_timeout: 2s
    health_check: {interval: 100ms, unhealthy_after: 2, healthy_after: 2}
listeners:
  grpc: {address: 127.0.0.1:0, shutdown_timeout: 2s}
  admin: {address: 127.0.0.1:0, pprof: true}
protos:
  - files: [fanout.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
routes:
%s`, strings.Join(o.seeds(), ","), filepath.Join(root(t), "examples", "fanout"), fetchRoute(topic, ""))
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	waitReady := func(want int) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			code, body := get(t, a, "/readyz")
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz: %d %s, want %d", code, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitReady(200)
	if code, _ := get(t, a, "/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ with pprof on: %d, want 200", code)
	}

	o.stop(t)
	var r struct {
		Ready    bool     `json:"ready"`
		NotReady []string `json:"not_ready"`
	}
	if err := json.Unmarshal([]byte(waitReady(503)), &r); err != nil {
		t.Fatal(err)
	}
	if r.Ready || len(r.NotReady) != 1 || !strings.Contains(r.NotReady[0], `"default" is unreachable`) {
		t.Errorf("/readyz during the outage: %+v", r)
	}
	if code, _ := get(t, a, "/healthz"); code != 200 {
		t.Errorf("/healthz during the outage: %d, want 200", code)
	}
	o.start(t)
	waitReady(200)
}

// TestMetricsOff: with metrics.enabled false the admin listener serves
// the components' state but counts no call; with listeners.admin.address
// empty Ferry listens on no admin port.
func TestMetricsOff(t *testing.T) {
	if d := config.Default(); !d.Metrics.Enabled || d.Listeners.Admin.Address != "127.0.0.1:7159" || d.Listeners.Admin.PProf {
		t.Errorf("defaults: metrics.enabled %v, listeners.admin %+v", d.Metrics.Enabled, d.Listeners.Admin)
	}
	cfg := ferryConfig(t, fetchRoute(kit.Topic(t, 1, nil), ""))
	cfg.Metrics.Enabled = false
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 30*time.Second)
	if res := call(ctx, dial(t, a), "UnaryEcho", nil, "hi"); status.Code(res.err) != codes.Unimplemented {
		t.Fatalf("unrouted call: %v", res.err)
	}
	mfs := scrape(t, a)
	if _, ok := sample(mfs, "ferry_calls_handled_total", nil); ok {
		t.Error("metrics.enabled false: calls counted")
	}
	if _, ok := sample(mfs, "ferry_fetch_hubs", nil); !ok {
		t.Error("metrics.enabled false: no ferry_fetch_hubs")
	}

	cfg = ferryConfig(t, fetchRoute(kit.Topic(t, 1, nil), ""))
	cfg.Listeners.Admin.Address = ""
	if a := startConfig(t, cfg); a.AdminAddr() != "" {
		t.Errorf("AdminAddr = %q, want none", a.AdminAddr())
	}
}

// TestMetricsKafkaAPI: a message polled and acknowledged counts one
// delivery and one acknowledgement; one polled again after its ack_timeout
// counts a delivery and a redelivery, all under the cluster's name. The
// message not acknowledged is the group's lag, gone once it is.
func TestMetricsKafkaAPI(t *testing.T) {
	kit.CheckLeaks(t)
	y := strings.Replace(kafkaAPIYAML(t, "    ack_timeout: 1s\n"), `admin: {address: ""}`, `admin: {address: "127.0.0.1:0"}`, 1)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	a := startConfig(t, cfg)
	topic := kit.Topic(t, 1, nil)
	ctx := testkit.Context(t, 30*time.Second)
	ferry := kafkav1.NewKafkaClient(dialAddr(t, a.GRPCAddr()))
	for _, v := range []string{"one", "two"} {
		if _, err := ferry.Produce(ctx, &kafkav1.ProduceRequest{Topic: topic, ValueText: proto.String(v)}); err != nil {
			t.Fatal(err)
		}
	}
	group := "g-" + topic
	poll := func() *kafkav1.Message {
		t.Helper()
		for {
			res, err := ferry.Poll(ctx, &kafkav1.PollRequest{Topic: topic, Group: group, MaxMessages: 1, Timeout: durationpb.New(time.Second)})
			switch {
			case err != nil || len(res.Messages) > 1:
				t.Fatalf("poll: %v %v", res, err)
			case len(res.Messages) == 1:
				return res.Messages[0]
			}
		}
	}
	m := poll()
	if _, err := ferry.Ack(ctx, &kafkav1.AckRequest{Topic: topic, Group: group,
		Acks: []*kafkav1.MessageRef{{Partition: m.Partition, Offset: m.Offset}}}); err != nil {
		t.Fatal(err)
	}
	// Not acknowledged: delivered again once its ack_timeout passed.
	first := poll()
	if again := poll(); again.Offset != first.Offset {
		t.Fatalf("polled offset %d after %d expired, want it again", again.Offset, first.Offset)
	}
	mfs := scrape(t, a)
	for name, want := range map[string]float64{
		"ferry_kafka_api_deliveries_total":         3,
		"ferry_kafka_api_redeliveries_total":       1,
		"ferry_kafka_api_acks_total":               1,
		"ferry_kafka_api_dead_letters_total":       0,
		"ferry_kafka_api_consumer_lag_records":     1,
		"ferry_kafka_api_consumer_lag_max_records": 1,
	} {
		if got, ok := sample(mfs, name, map[string]string{"cluster": "default"}); !ok || got != want {
			t.Errorf("%s{cluster=default} = %v (found %v), want %v", name, got, ok, want)
		}
	}
	if _, err := ferry.Ack(ctx, &kafkav1.AckRequest{Topic: topic, Group: group,
		Acks: []*kafkav1.MessageRef{{Partition: first.Partition, Offset: first.Offset}}}); err != nil {
		t.Fatal(err)
	}
	mfs = scrape(t, a)
	for _, name := range []string{"ferry_kafka_api_consumer_lag_records", "ferry_kafka_api_consumer_lag_max_records"} {
		if got, ok := sample(mfs, name, map[string]string{"cluster": "default"}); !ok || got != 0 {
			t.Errorf("%s{cluster=default} after the last ack = %v (found %v), want 0", name, got, ok)
		}
	}
}
