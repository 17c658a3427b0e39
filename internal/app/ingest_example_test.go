package app_test

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/ingest"
)

// TestIngestExample runs examples/ingest as the README does, against the
// test brokers and a ticker of its own: the ticks arrive as JSON records
// keyed by symbol, with the tick's time as their timestamp, and Ferry
// stopped and started again goes on after the newest tick in the topic,
// with no tick missing or written twice.
func TestIngestExample(t *testing.T) {
	kit.CheckLeaks(t)
	t.Setenv("FERRY_DATA_DIR", t.TempDir())
	cfg := loadExample(t, "ingest")
	if len(cfg.Sources) != 1 || cfg.Sources[0].Name != "ticks" || cfg.Sources[0].Topic != "ticks" {
		t.Fatalf("the example's sources are %+v: want one, ticks, writing to ticks", cfg.Sources)
	}
	for i := range cfg.Clusters {
		cfg.Clusters[i].Brokers = kit.Seeds(t)
		cfg.Clusters[i].TLS, cfg.Clusters[i].SASL = kit.Security(t)
	}
	cfg.Embedded.DataDir = ""
	topic := kit.Topic(t, 1, nil)
	cfg.Sources[0].Topic = topic
	cfg.Ingest.GroupID = topic + "-group"
	cfg.Ingest.TopicPrefix = topic + "-"

	// The example's ticker, on a free port, ticking every 5ms.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ticker := &tick.Server{Interval: 5 * time.Millisecond}
	srv := grpc.NewServer()
	tick.RegisterTickerServer(srv, ticker)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cfg.Sources[0].Target = lis.Addr().String()

	// run starts Ferry, waits until the topic holds at least n records,
	// and stops Ferry; it returns the source's status before the stop.
	run := func(n int64) ingest.Status {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := app.Start(ctx, cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(context.Background())
		for endOffset(t, topic) < n {
			if ctx.Err() != nil {
				t.Fatalf("%s holds %d records, want %d: status %+v", topic, endOffset(t, topic), n, a.SourceStatus())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return a.SourceStatus()[0]
	}
	if st := run(20); st.Resumes != 0 {
		t.Errorf("the first run resumed (%+v): the topic was empty", st)
	}
	first := endOffset(t, topic)
	if st := run(first + 20); st.Resumes != 1 {
		t.Errorf("the second run's status %+v: want it resumed once from the topic", st)
	}

	recs := readTopic(t, topic, int(endOffset(t, topic)))
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
