package app_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestIngestExample runs examples/ingest against the test brokers and a
// ticker of its own: the ticks arrive as JSON records keyed by symbol,
// with the tick's time as their timestamp, and Ferry stopped and started
// again goes on after the newest tick in the topic, with no tick missing
// or written twice.
func TestIngestExample(t *testing.T) {
	kit.CheckLeaks(t)
	t.Setenv("FERRY_DATA_DIR", t.TempDir())
	cfg := loadIngestExample(t)
	for i := range cfg.Clusters {
		cfg.Clusters[i].Brokers = kit.Seeds(t)
		cfg.Clusters[i].TLS, cfg.Clusters[i].SASL = kit.Security(t)
	}
	topic := kit.Topic(t, 1, nil)
	cfg.Sources[0].Topic = topic
	cfg.Ingest.GroupID = topic + "-group"
	cfg.Ingest.TopicPrefix = topic + "-"
	checkIngestRestart(t, cfg)
}

// TestIngestExampleEmbedded runs examples/ingest as the README does, on
// its embedded broker with its data directory: the topic outlives Ferry's
// stop, and the ticks go on after a restart.
func TestIngestExampleEmbedded(t *testing.T) {
	if testkit.Real() {
		t.Skip("the example uses the real brokers (FERRY_BROKERS), which TestIngestExample covers")
	}
	kit.CheckLeaks(t)
	t.Setenv("FERRY_DATA_DIR", t.TempDir())
	cfg := loadIngestExample(t)
	if len(cfg.Clusters) != 1 || len(cfg.Clusters[0].Brokers) != 0 || cfg.Embedded.DataDir != os.Getenv("FERRY_DATA_DIR") {
		t.Fatalf("the example's cluster %+v, embedded %+v: want the embedded broker, keeping its data in FERRY_DATA_DIR", cfg.Clusters, cfg.Embedded)
	}
	checkIngestRestart(t, cfg)
}

// loadIngestExample loads examples/ingest/ferry.yaml with the source's
// target replaced by a ticker of the test's own, ticking every 5ms.
func loadIngestExample(t *testing.T) *config.Config {
	t.Helper()
	cfg := loadExample(t, "ingest")
	if len(cfg.Sources) != 1 || cfg.Sources[0].Name != "ticks" || cfg.Sources[0].Topic != "ticks" {
		t.Fatalf("the example's sources are %+v: want one, ticks, writing to ticks", cfg.Sources)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	tick.RegisterTickerServer(srv, &tick.Server{Interval: 5 * time.Millisecond})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cfg.Sources[0].Target = lis.Addr().String()
	return cfg
}

// checkIngestRestart starts Ferry with cfg twice, stopping it in between,
// and checks the records of the source's topic: one per tick from 1 on, in
// order, none twice, as the example configures them.
func checkIngestRestart(t *testing.T, cfg *config.Config) {
	t.Helper()
	topic := cfg.Sources[0].Topic
	// run starts Ferry, reads the topic from the start until it holds at
	// least n records, and stops Ferry; it returns the records and the
	// source's status before the stop.
	run := func(n int) ([]*kgo.Record, ingest.Status) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := app.Start(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		cl := kit.Client(t, kgo.SeedBrokers(a.KafkaAddrs("default")...), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		defer cl.Close()
		var recs []*kgo.Record
		for len(recs) < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %d records of %s, want %d: status %+v", len(recs), topic, n, a.SourceStatus())
			}
			recs = append(recs, fs.Records()...)
		}
		return recs, a.SourceStatus()[0]
	}
	recs, st := run(20)
	if st.Resumes != 0 {
		t.Errorf("the first run resumed (%+v): the topic was empty", st)
	}
	first := len(recs)
	recs, st = run(first + 20)
	if st.Resumes != 1 {
		t.Errorf("the second run's status %+v: want it resumed once from the topic", st)
	}

	ticker := &tick.Server{}
	for i, r := range recs {
		want := int64(i + 1) // one partition: the ticks in order from 1, none twice
		var v struct {
			Seq    string  `json:"seq"`
			Symbol string  `json:"symbol"`
			Price  float64 `json:"price"`
			Time   string  `json:"time"`
		}
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("record %d: value %q is not JSON: %v", r.Offset, r.Value, err)
		}
		seq, err := strconv.ParseInt(v.Seq, 10, 64)
		if err != nil || seq != want {
			t.Fatalf("record %d holds tick %q, want %d: ticks missing or written twice around the restart after %d records", r.Offset, v.Seq, want, first)
		}
		tk := ticker.Tick(seq)
		if v.Symbol != tk.Symbol || v.Price != tk.Price || string(r.Key) != tk.Symbol {
			t.Errorf("record %d: key %q, value %s: want key and symbol %s, price %v", r.Offset, r.Key, r.Value, tk.Symbol, tk.Price)
		}
		if ts, err := time.Parse(time.RFC3339Nano, v.Time); err != nil || !r.Timestamp.Equal(ts.Truncate(time.Millisecond)) {
			t.Errorf("record %d: timestamp %s, want the tick's time %s", r.Offset, r.Timestamp, v.Time)
		}
		for k, want := range map[string]string{
			ingest.HeaderSource: "ticks", ingest.HeaderMethod: "example.ingest.Ticker/Ticks",
			ingest.HeaderCursor: v.Seq,
		} {
			if got, _ := header(r, k); got != want {
				t.Errorf("record %d: header %s = %q, want %q", r.Offset, k, got, want)
			}
		}
		// ferry-resume is the cursor up to which every tick was
		// acknowledged when this one was written: behind it, or none yet.
		if got, _ := header(r, ingest.HeaderResume); got != "" {
			if n, err := strconv.ParseInt(got, 10, 64); err != nil || n >= seq {
				t.Errorf("record %d: %s = %q, want a tick before %d", r.Offset, ingest.HeaderResume, got, seq)
			}
		}
	}
}
