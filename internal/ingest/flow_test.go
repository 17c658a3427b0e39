package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/ingest"
)

// TestBackPressure: while Kafka holds back the source's produce requests,
// Ferry stops reading the call, so the server's sends stop too (gRPC flow
// control); once Kafka answers again every tick reaches the topic.
func TestBackPressure(t *testing.T) {
	fake := kit.Fake(t)
	if fake == nil {
		t.Skip("holding produce requests back needs the embedded broker's control functions")
	}
	tk := startTicker(t)
	topic := uniq(t, "pressure")
	var stalled atomic.Bool
	release := make(chan struct{})
	defer func() {
		stalled.Store(false)
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	fake.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		if !stalled.Load() {
			return nil, nil, false
		}
		// Newer produce requests name topics by id: every produce request
		// waits (the package's tests run one at a time).
		fake.SleepControl(func() { <-release })
		return nil, nil, false
	})
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: bp
    target: %s
    metadata: {x-source: bp}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: -1, payload_size: 1000}
    topic: %s
    max_in_flight: 50
    cursor: {field: seq, request_field: start, increment: 1}
`, tk.addr, topic)))
	waitState(t, a, "bp", ingest.StateRunning, 30*time.Second)
	for statusOf(a, "bp").Records < 500 {
		time.Sleep(10 * time.Millisecond)
	}
	stalled.Store(true)
	time.Sleep(time.Second)
	_, _, before, _ := tk.stat("bp")
	st := statusOf(a, "bp")
	time.Sleep(time.Second)
	_, _, after, _ := tk.stat("bp")
	if after != before {
		t.Errorf("the server sent %d ticks in a second while Kafka held every produce request back, want 0: Ferry went on reading", after-before)
	}
	if st.InFlight != 50 {
		t.Errorf("%d records in flight while Kafka was stalled, want max_in_flight (50)", st.InFlight)
	}
	t.Logf("stalled: server sent %d ticks, Kafka acknowledged %d, %d in flight", after, st.Records, st.InFlight)
	stalled.Store(false)
	close(release)
	for statusOf(a, "bp").Records < uint64(after)+1000 {
		time.Sleep(10 * time.Millisecond)
	}
	recs := readAll(t, topic, int(after)+1000)
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("%d ticks written twice", dups)
	}
}

// TestSharedByInstances: two instances in one ingest group run three
// sources, each on one of them; when one stops, the other takes its
// sources over and resumes them with no gap.
func TestSharedByInstances(t *testing.T) {
	tk := startTicker(t)
	group, names := uniq(t, "g"), []string{"s1", "s2", "s3"}
	topics := map[string]string{}
	var sources strings.Builder
	for _, n := range names {
		topics[n] = uniq(t, n)
		kit.CreateTopic(t, topics[n], 1, nil)
		fmt.Fprintf(&sources, `
  - name: %[1]s
    target: %[2]s
    metadata: {x-source: %[1]s}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 5}
    topic: %[3]s
    cursor: {field: seq, request_field: start, increment: 1}
`, n, tk.addr, topics[n])
	}
	y := ferryYAML(t, group, sources.String())
	a, stopA := startFerry(t, y)
	b, _ := startFerry(t, y)
	owner := func() map[string]*app.App {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			own := map[string]*app.App{}
			ok, onA := true, 0
			for _, n := range names {
				ra, rb := statusOf(a, n).State == ingest.StateRunning, statusOf(b, n).State == ingest.StateRunning
				switch {
				case ra && !rb:
					own[n] = a
					onA++
				case rb && !ra:
					own[n] = b
				default:
					ok = false
				}
			}
			// The second instance joins after the first took every
			// source: the group then hands some over.
			if ok && onA > 0 && onA < len(names) {
				return own
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the sources did not settle on one instance each, spread over both: a %+v, b %+v", a.SourceStatus(), b.SourceStatus())
		return nil
	}
	own := owner()
	t.Logf("sources on the first instance: %v", func() (on []string) {
		for _, n := range names {
			if own[n] == a {
				on = append(on, n)
			}
		}
		return on
	}())
	for _, n := range names {
		readAll(t, topics[n], 50)
	}
	stopA()
	for _, n := range names {
		if st := statusOf(b, n); st.State != ingest.StateRunning {
			waitState(t, b, n, ingest.StateRunning, 30*time.Second)
		}
	}
	for _, n := range names {
		before := statusOf(b, n).Records
		for statusOf(b, n).Records < before+50 {
			time.Sleep(20 * time.Millisecond)
		}
		recs := readAll(t, topics[n], 100)
		if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
			t.Errorf("source %s: %d ticks written twice after an orderly handover", n, dups)
		}
		if _, maxOpen, _, _ := tk.stat(n); maxOpen != 1 {
			t.Errorf("source %s: %d calls open at once, want 1", n, maxOpen)
		}
	}
}

// TestPollUnary: a unary method is called again every reopen_delay, each
// answer a record.
func TestPollUnary(t *testing.T) {
	tk := startTicker(t)
	topic := uniq(t, "poll")
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: poll
    target: %s
    method: example.ingest.Ticker/Latest
    topic: %s
    reconnect: {reopen_delay: 20ms}
`, tk.addr, topic)))
	readAll(t, topic, 10)
	st := statusOf(a, "poll")
	if st.Gaps != 0 || st.Reconnects < 9 {
		t.Errorf("status %+v: want no gaps and a reconnect per poll", st)
	}
}

// TestIdleTimeout: a call that delivers nothing for idle_timeout is
// opened again from the cursor.
func TestIdleTimeout(t *testing.T) {
	tk := startTicker(t)
	topic := uniq(t, "idle")
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: idle
    target: %s
    metadata: {x-source: idle}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 60000}
    topic: %s
    idle_timeout: 200ms
    reconnect: {initial_backoff: 10ms, max_backoff: 20ms}
    cursor: {field: seq, request_field: start, increment: 1}
`, tk.addr, topic)))
	recs := readAll(t, topic, 4)
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("%d ticks written twice", dups)
	}
	if st := statusOf(a, "idle"); st.Reconnects < 3 {
		t.Errorf("status %+v: want a reconnect per idle timeout", st)
	}
}

// TestCheck: sources are checked against the protos when the
// configuration is validated, each error naming the file, line and key.
func TestCheck(t *testing.T) {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	for _, tc := range []struct{ source, want string }{
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Nope}`, `ferry.yaml:9: sources[0].method: no loaded proto defines a method "example.ingest.Ticker/Nope"`},
		{`{name: a, target: x:1, topic: t, method: grpc.examples.echo.Echo/ClientStreamingEcho}`, `sources[0].method: grpc.examples.echo.Echo/ClientStreamingEcho is client-streaming`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, request: {begin: 1}}`, `sources[0].request: is not a example.ingest.TicksRequest in JSON: `},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, key: "{sym}"}`, `sources[0].key: "{sym}": example.ingest.Tick has no field "sym"`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, key: "{symbol"}`, `sources[0].key: "{symbol": a { has no closing }`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, headers: {h: "{seq.x}"}}`, `sources[0].headers.h: "{seq.x}": field example.ingest.Tick.seq is not a message`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, timestamp_field: symbol}`, `sources[0].timestamp_field: field example.ingest.Tick.symbol is a string`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: symbol, request_field: start}}`, `sources[0].cursor.request_field: field example.ingest.TicksRequest.start cannot take the cursor`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: time, request_field: start}}`, `sources[0].cursor.request_field: field example.ingest.TicksRequest.start cannot take the cursor`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: payload, request_field: start}}`, `cannot take the cursor`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: price}}`, `sources[0].cursor.field: field example.ingest.Tick.price is a double: a cursor is an integer, a string, bytes or a google.protobuf.Timestamp`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: seq, request_field: nope}}`, `sources[0].cursor.request_field: example.ingest.TicksRequest has no field "nope"`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, cursor: {field: seq}}`, `sources[0].cursor.request_field: example.ingest.TicksRequest has no field "seq"`},
		{`{name: a, target: x:1, topic: t, method: example.ingest.Ticker/Ticks, max_message_size: 8388608}`, `sources[0].max_message_size: 8388608 is more than listeners.grpc.max_recv_message_size (983040)`},
	} {
		y := fmt.Sprintf(`clusters: [{name: default}]
protos:
  - files: [ticker.proto]
    import_paths: [%q]
  - files: [echo.proto]
    import_paths: [%q]
sources:
  -
    %s
`, filepath.Join(root, "examples", "ingest"), filepath.Join(root, "examples", "echo"), tc.source)
		cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
		if err == nil {
			err = app.Validate(t.Context(), cfg)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.source, err, tc.want)
		}
	}
}

// TestBackPressureQuota: on a real broker, a produce quota on Ferry's
// client id makes Kafka slow; the server's sends slow down with it,
// nothing piles up in Ferry, and nothing is lost.
func TestBackPressureQuota(t *testing.T) {
	if kit.Fake(t) != nil {
		t.Skip("the embedded broker has no quotas: TestBackPressure stalls it instead")
	}
	tk := startTicker(t)
	topic, clientID := uniq(t, "quota"), uniq(t, "client")
	adm := kadm.NewClient(kit.Client(t))
	quota := func(remove bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{
			Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &clientID}},
			Ops:    []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 20000, Remove: remove}},
		}})
		if err == nil {
			for _, r := range res {
				err = errors.Join(err, r.Err)
			}
		}
		if err != nil {
			t.Fatalf("setting the quota: %v", err)
		}
	}
	quota(false)
	defer quota(true)
	y := strings.Replace(ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: quota
    target: %s
    metadata: {x-source: quota}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: -1, payload_size: 1000}
    topic: %s
    max_in_flight: 100
    cursor: {field: seq, request_field: start, increment: 1}
`, tk.addr, topic)), "name: default", "name: default, client_id: "+clientID, 1)
	a, _ := startFerry(t, y)
	waitState(t, a, "quota", ingest.StateRunning, 30*time.Second)
	time.Sleep(4 * time.Second)
	_, _, sent, _ := tk.stat("quota")
	st := statusOf(a, "quota")
	t.Logf("throttled to 20 kB/s for 4 s: the server sent %d ticks of 1 kB, Kafka acknowledged %d, %d in flight", sent, st.Records, st.InFlight)
	if st.InFlight > 100 {
		t.Errorf("%d records in flight, more than max_in_flight (100)", st.InFlight)
	}
	// Unthrottled, the ticker sends tens of thousands a second; throttled,
	// what it sent is what Kafka took, the window and what gRPC's flow
	// control lets through.
	if sent > 2000 {
		t.Errorf("the server sent %d ticks in 4 s while Kafka took 20 kB/s: Ferry did not hold it back", sent)
	}
	quota(true)
	recs := readAll(t, topic, int(sent))
	if dups := gapsAndDups(t, seqs(t, recs), 1); dups != 0 {
		t.Errorf("%d ticks written twice", dups)
	}
}

// TestCoordinationTopicNotYetKnown: a broker that does not know a
// coordination topic for a moment after creating it (a real broker's
// metadata trails its controller) delays the start, and does not fail it.
func TestCoordinationTopicNotYetKnown(t *testing.T) {
	fake := kit.Fake(t)
	if fake == nil {
		t.Skip("answering metadata requests needs the embedded broker's control functions")
	}
	coord := "ferry-ingest-" + uniq(t, "late")
	var refused atomic.Int32
	fake.ControlKey(kmsg.Metadata.Int16(), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		if len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != coord || refused.Load() >= 3 {
			return nil, nil, false
		}
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr(coord)
		rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	tk := startTicker(t)
	a, _ := startFerry(t, ferryYAML(t, uniq(t, "g"), fmt.Sprintf(`
  - name: %s
    target: %s
    metadata: {x-source: late}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: 1}
    topic: %s
`, strings.TrimPrefix(coord, "ferry-ingest-"), tk.addr, uniq(t, "late"))))
	if n := refused.Load(); n == 0 {
		t.Fatal("no metadata request for the coordination topic alone was refused: the test did not reach the describe it means to delay")
	}
	waitState(t, a, strings.TrimPrefix(coord, "ferry-ingest-"), ingest.StateRunning, 30*time.Second)
}
