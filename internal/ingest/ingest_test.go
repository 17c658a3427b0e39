package ingest_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// uniq names a test's topic and group so that runs against a real broker
// never meet an earlier run's records.
func uniq(t testing.TB, what string) string {
	return fmt.Sprintf("ingest-%s-%d", what, time.Now().UnixNano())
}

// TestRecords: a source writes each tick as a record with the configured
// value format, key, headers and timestamp, and Ferry's own headers.
func TestRecords(t *testing.T) {
	tk := startTicker(t)
	jsonTopic, pbTopic := uniq(t, "json"), uniq(t, "pb")
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: json
    target: %[1]s
    metadata: {x-source: json}
    method: example.ingest.Ticker/Ticks
    request: {start: 100, interval_ms: 5}
    topic: %[2]s
    value: {format: json, use_proto_names: true}
    key: "{symbol}"
    headers: {x-seq: "seq {seq}", x-price: "{price}"}
    metadata_headers: true
    timestamp_field: time
    cursor: {field: seq, request_field: start, increment: 1}
  - name: pb
    target: %[1]s
    metadata: {x-source: pb}
    method: example.ingest.Ticker/Ticks
    request: '{"start": 7, "intervalMs": 5}'
    topic: %[3]s
`, tk.addr, jsonTopic, pbTopic)))
	waitState(t, a, "json", ingest.StateRunning, 30*time.Second)

	recs := readAll(t, jsonTopic, 5)
	for i, r := range recs[:5] {
		seq := int64(100 + i)
		want := tk.inner.Tick(seq)
		var got map[string]any
		if err := json.Unmarshal(r.Value, &got); err != nil {
			t.Fatalf("record %d: value %q: %v", i, r.Value, err)
		}
		if got["seq"] != fmt.Sprint(seq) || got["symbol"] != want.Symbol || got["price"] != want.Price {
			t.Errorf("record %d: value %s, want seq %d, symbol %s, price %v (JSON with proto names)", i, r.Value, seq, want.Symbol, want.Price)
		}
		if string(r.Key) != want.Symbol {
			t.Errorf("record %d: key %q, want %q", i, r.Key, want.Symbol)
		}
		for k, v := range map[string]string{
			"x-seq": fmt.Sprintf("seq %d", seq), "x-price": fmt.Sprint(want.Price), "meta:x-ticker": "example",
			ingest.HeaderSource: "json", ingest.HeaderMethod: "example.ingest.Ticker/Ticks", ingest.HeaderCursor: fmt.Sprint(seq),
		} {
			if h := header(r, k); h != v {
				t.Errorf("record %d: header %s = %q, want %q", i, k, h, v)
			}
		}
		ts, _ := time.Parse(time.RFC3339Nano, got["time"].(string))
		if !r.Timestamp.Equal(ts.Truncate(time.Millisecond)) {
			t.Errorf("record %d: timestamp %s, want the tick's time %s", i, r.Timestamp, ts)
		}
	}

	recs = readAll(t, pbTopic, 3)
	for i, r := range recs[:3] {
		var got tick.Tick
		if err := proto.Unmarshal(r.Value, &got); err != nil || got.Seq != int64(7+i) {
			t.Errorf("record %d: value %x is not tick %d: %v", i, r.Value, 7+i, err)
		}
		if r.Key != nil {
			t.Errorf("record %d: key %q, want none", i, r.Key)
		}
		if h := header(r, ingest.HeaderCursor); h != "" {
			t.Errorf("record %d: a source without a cursor wrote %s %q", i, ingest.HeaderCursor, h)
		}
		if len(r.Headers) != 2 {
			t.Errorf("record %d: headers %v, want only ferry-source and ferry-method", i, r.Headers)
		}
	}
}

// TestResumeAfterRestart: Ferry stopped and started again resumes each
// source from its topic: no tick is missing, and with one partition and
// cursor.increment none is written twice.
func TestResumeAfterRestart(t *testing.T) {
	tk := startTicker(t)
	topic, group := uniq(t, "resume"), uniq(t, "g")
	y := ferryYAML(t, group, fmt.Sprintf(`
  - name: r
    target: %s
    metadata: {x-source: r}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 2}
    topic: %s
    cursor: {field: seq, request_field: start, increment: 1}
`, tk.addr, topic))
	kit.CreateTopic(t, topic, 1, nil)
	for run := 1; run <= 3; run++ {
		a, stop := startFerry(t, y)
		waitState(t, a, "r", ingest.StateRunning, 30*time.Second)
		readAll(t, topic, run*50)
		stop()
	}
	recs := readAll(t, topic, 150)
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("%d ticks written twice, want none with one partition after an orderly stop", dups)
	}
	_, _, _, starts := tk.stat("r")
	if len(starts) != 3 || starts[0] != 1 {
		t.Errorf("calls started at %v, want 3 calls, the first at 1", starts)
	}
}

// TestReconnect: calls the server ends with an error are opened again from
// the cursor, with backoff; the topic has every tick.
func TestReconnect(t *testing.T) {
	tk := startTicker(t)
	tk.endAfter.Store(40)
	topic := uniq(t, "reconnect")
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: c
    target: %s
    metadata: {x-source: c}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 1}
    topic: %s
    cursor: {field: seq, request_field: start, increment: 1}
    reconnect: {initial_backoff: 10ms, max_backoff: 50ms}
`, tk.addr, topic)))
	recs := readAll(t, topic, 200)
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("%d ticks written twice", dups)
	}
	if st := statusOf(a, "c"); st.Reconnects < 4 {
		t.Errorf("status %+v: want at least 4 reconnects", st)
	}
	_, _, _, starts := tk.stat("c")
	for i := 1; i < len(starts); i++ {
		if starts[i] != starts[i-1]+40 {
			t.Errorf("calls started at %v: each should go on 40 ticks after the last", starts)
			break
		}
	}
	// The server goes away and comes back on the same address.
	tk.endAfter.Store(0)
	before := statusOf(a, "c").Records
	tk.stop()
	time.Sleep(300 * time.Millisecond)
	tk.start(tk.addr)
	waitState(t, a, "c", ingest.StateRunning, 30*time.Second)
	recs = readAll(t, topic, int(before)+100)
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("after the server restarted: %d ticks written twice", dups)
	}
}

// TestPermanentError: a source whose server answers a code in
// reconnect.stop_on stops, with the reason in its status, and calls no
// more.
func TestPermanentError(t *testing.T) {
	tk := startTicker(t)
	tk.fail.Store(status.New(codes.PermissionDenied, "not for you"))
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: p
    target: %s
    metadata: {x-source: p}
    method: example.ingest.Ticker/Ticks
    topic: %s
`, tk.addr, uniq(t, "perm"))))
	st := waitState(t, a, "p", ingest.StateStopped, 30*time.Second)
	if want := "the server answered PermissionDenied: not for you"; st.Reason != want {
		t.Errorf("reason %q, want %q", st.Reason, want)
	}
	time.Sleep(300 * time.Millisecond)
	if calls, _, _, _ := tk.stat("p"); calls != 1 {
		t.Errorf("the server saw %d calls, want 1", calls)
	}
}

func statusOf(a interface{ SourceStatus() []ingest.Status }, name string) ingest.Status {
	for _, st := range a.SourceStatus() {
		if st.Name == name {
			return st
		}
	}
	return ingest.Status{}
}

// TestStatusEndpoints: the admin listener serves every source's status
// at /sources and its metrics at /metrics.
func TestStatusEndpoints(t *testing.T) {
	tk := startTicker(t)
	topic := uniq(t, "status")
	y := strings.Replace(ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: st
    target: %s
    metadata: {x-source: st}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 1}
    topic: %s
    cursor: {field: seq, request_field: start, increment: 1}
`, tk.addr, topic)), `admin: {address: ""}`, `admin: {address: "127.0.0.1:0"}`, 1)
	a, _ := startFerry(t, y)
	readAll(t, topic, 20)
	get := func(path string) []byte {
		resp, err := http.Get("http://" + a.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, resp.Status, b)
		}
		return b
	}
	var body struct{ Sources []ingest.Status }
	if err := json.Unmarshal(get("/sources"), &body); err != nil || len(body.Sources) != 1 {
		t.Fatalf("/sources: %+v, %v", body, err)
	}
	if st := body.Sources[0]; st.Name != "st" || st.State != ingest.StateRunning || st.Records < 20 || st.Cursor == "" {
		t.Errorf("/sources: %+v, want st running with 20 records or more and a cursor", st)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(get("/metrics")))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels ...string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("/metrics has no %s", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
		t.Fatalf("/metrics has no %s%v", name, labels)
		return 0
	}
	if v := value("ferry_source_state", "source", "st", "state", "running"); v != 1 {
		t.Errorf("ferry_source_state{running} = %v, want 1", v)
	}
	if v := value("ferry_source_state", "source", "st", "state", "stopped"); v != 0 {
		t.Errorf("ferry_source_state{stopped} = %v, want 0", v)
	}
	if v := value("ferry_source_records_total", "source", "st"); v < 20 {
		t.Errorf("ferry_source_records_total = %v, want 20 or more", v)
	}
	for _, name := range []string{"ferry_source_reconnects_total", "ferry_source_gaps_total", "ferry_source_failed_records_total", "ferry_source_lost_records_total", "ferry_source_resumes_total", "ferry_source_in_flight_records"} {
		value(name, "source", "st")
	}
}

// TestTLS: a source reaches its server over mutual TLS with the
// configured CA and client certificate; without the certificate the
// server refuses it, and the source backs off saying why.
func TestTLS(t *testing.T) {
	ca := testca.New(t)
	c, k, _ := ca.Issue(t, x509.ExtKeyUsageServerAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	tk := startTickerTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool, MinVersion: tls.VersionTLS12})
	dir := t.TempDir()
	cc, ck, _ := ca.Issue(t, x509.ExtKeyUsageClientAuth)
	for name, b := range map[string][]byte{"ca.pem": ca.PEM, "client.pem": cc, "client-key.pem": ck} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	source := func(name, topic, client string) string {
		return fmt.Sprintf(`
  - name: %[1]s
    target: %[2]s
    metadata: {x-source: %[1]s}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 2}
    topic: %[3]s
    reconnect: {initial_backoff: 50ms, max_backoff: 100ms}
    tls: {enabled: true, ca_file: %[4]q%[5]s}
`, name, tk.addr, topic, filepath.Join(dir, "ca.pem"), client)
	}
	topic := uniq(t, "tls")
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"),
		source("mtls", topic, fmt.Sprintf(", cert_file: %q, key_file: %q", filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")))+
			source("nocert", uniq(t, "tls"), "")))
	readAll(t, topic, 20)
	st := waitState(t, a, "nocert", ingest.StateBackingOff, 30*time.Second)
	if !strings.Contains(st.Reason, "Unavailable") || !strings.Contains(strings.ToLower(st.Reason), "certificate") {
		t.Errorf("reason %q, want UNAVAILABLE naming the missing certificate", st.Reason)
	}
}

// TestOldTimestamps: records stamped with a response's own time are
// written even when that time lies further back than the producer's
// delivery timeout.
func TestOldTimestamps(t *testing.T) {
	tk := startTicker(t)
	tk.age.Store(int64(2 * time.Hour))
	topic := uniq(t, "old")
	startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: old
    target: %s
    metadata: {x-source: old}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 5}
    topic: %s
    timestamp_field: time
`, tk.addr, topic)))
	for _, r := range readAll(t, topic, 5) {
		if age := time.Since(r.Timestamp); age < 2*time.Hour-time.Minute || age > 2*time.Hour+time.Minute {
			t.Fatalf("record timestamp %s is %s old, want the tick's, 2h", r.Timestamp, age)
		}
	}
}

// TestCoordinationTopicPartitions: a coordination topic with more than one
// partition would run its source on several instances; Ferry refuses to
// start with it.
func TestCoordinationTopicPartitions(t *testing.T) {
	prefix := uniq(t, "coord") + "-"
	kit.CreateTopic(t, prefix+"two", 2, nil)
	y := strings.Replace(ferryYAML(t, uniq(t, "g"), `
  - name: two
    target: 127.0.0.1:1
    method: example.ingest.Ticker/Ticks
    topic: t
`), "  session_timeout: 6s", "  session_timeout: 6s\n  topic_prefix: "+prefix, 1)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		a.Close(t.Context())
		t.Fatal("Ferry started with a coordination topic of 2 partitions")
	}
	if want := "coordination topic " + prefix + "two has 2 partitions, and must have 1"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
}
