package ingest_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// kit is the brokers the suite runs against: a real cluster when
// FERRY_TEST_BROKERS names one, else an in-process kfake broker.
var kit = testkit.NewBroker(1)

func TestMain(m *testing.M) {
	code := m.Run()
	kit.Close()
	os.Exit(code)
}

// ticker is the example's ticker with what a test needs: it counts the
// calls and ticks sent per source (the x-source metadata), can end calls
// with an error, and can be stopped and started again on its address.
type ticker struct {
	tick.UnimplementedTickerServer
	t    testing.TB
	addr string
	// fail, when set, answers every call with it.
	fail atomic.Pointer[status.Status]
	// endAfter, when > 0, ends every call with UNAVAILABLE after that
	// many ticks.
	endAfter atomic.Int64
	// age, when set, dates every tick that far back.
	age   atomic.Int64
	inner tick.Server
	// tls, when set, serves over TLS.
	tls *tls.Config

	mu      sync.Mutex
	srv     *grpc.Server
	calls   map[string]int
	open    map[string]int
	maxOpen map[string]int
	sent    map[string]int64
	starts  map[string][]int64
}

func startTicker(t testing.TB) *ticker { return startTickerTLS(t, nil) }

// startTickerTLS starts the ticker serving over TLS with cfg (nil:
// plaintext).
func startTickerTLS(t testing.TB, cfg *tls.Config) *ticker {
	tk := &ticker{t: t, tls: cfg, calls: map[string]int{}, open: map[string]int{}, maxOpen: map[string]int{}, sent: map[string]int64{}, starts: map[string][]int64{}}
	tk.start("127.0.0.1:0")
	t.Cleanup(tk.stop)
	return tk
}

func (tk *ticker) start(addr string) {
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tk.t.Fatal(err)
	}
	if tk.tls != nil {
		lis = tls.NewListener(lis, tk.tls)
	}
	srv := grpc.NewServer()
	tick.RegisterTickerServer(srv, tk)
	tk.mu.Lock()
	tk.srv, tk.addr = srv, lis.Addr().String()
	tk.mu.Unlock()
	go srv.Serve(lis)
}

func (tk *ticker) stop() {
	tk.mu.Lock()
	srv := tk.srv
	tk.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

func (tk *ticker) Ticks(req *tick.TicksRequest, stream grpc.ServerStreamingServer[tick.Tick]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	src := strings.Join(md.Get("x-source"), "")
	tk.mu.Lock()
	tk.calls[src]++
	tk.starts[src] = append(tk.starts[src], req.GetStart())
	tk.open[src]++
	tk.maxOpen[src] = max(tk.maxOpen[src], tk.open[src])
	tk.mu.Unlock()
	defer func() {
		tk.mu.Lock()
		tk.open[src]--
		tk.mu.Unlock()
	}()
	if st := tk.fail.Load(); st != nil {
		return st.Err()
	}
	w := &countingStream{ServerStreamingServer: stream, tk: tk, src: src, limit: tk.endAfter.Load()}
	return tk.inner.Ticks(req, w)
}

// countingStream counts the ticks sent and ends the call after limit.
type countingStream struct {
	grpc.ServerStreamingServer[tick.Tick]
	tk    *ticker
	src   string
	limit int64
	n     int64
}

func (c *countingStream) Send(t *tick.Tick) error {
	if c.limit > 0 && c.n >= c.limit {
		return status.Error(codes.Unavailable, "the test ends the call")
	}
	if age := time.Duration(c.tk.age.Load()); age > 0 {
		t.Time = timestamppb.New(time.Now().Add(-age))
	}
	if err := c.ServerStreamingServer.Send(t); err != nil {
		return err
	}
	c.n++
	c.tk.mu.Lock()
	c.tk.sent[c.src]++
	c.tk.mu.Unlock()
	return nil
}

func (tk *ticker) Latest(ctx context.Context, req *tick.LatestRequest) (*tick.Tick, error) {
	return tk.inner.Latest(ctx, req)
}

func (tk *ticker) stat(src string) (calls, maxOpen int, sent int64, starts []int64) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.calls[src], tk.maxOpen[src], tk.sent[src], append([]int64(nil), tk.starts[src]...)
}

// ferryYAML is a configuration with the ticker's proto, no listeners of
// its own, the test brokers and sources.
func ferryYAML(t testing.TB, group, sources string) string {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	return fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: "127.0.0.1:0"}
  http: {address: ""}
  admin: {address: ""}
protos:
  - files: [ticker.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
ingest:
  group_id: %s
  session_timeout: 6s
  drain_timeout: 10s
sources:
%s`, kit.ClusterYAML(t), filepath.Join(root, "examples", "ingest"), group, sources)
}

// startFerry starts Ferry with the YAML; stop closes it (also at the end
// of the test).
func startFerry(t testing.TB, y string) (a *app.App, stop func()) {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "ferry.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err = app.Start(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a.Close(ctx)
		})
	}
	t.Cleanup(stop)
	return a, stop
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitState waits until the source reaches state on a.
func waitState(t testing.TB, a *app.App, name string, state ingest.State, within time.Duration) ingest.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	var last ingest.Status
	for time.Now().Before(deadline) {
		for _, st := range a.SourceStatus() {
			if st.Name == name {
				last = st
				if st.State == state {
					return st
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("source %s did not reach %s within %s: %+v", name, state, within, last)
	return last
}

// readAll reads every record of topic up to its end offsets, waiting until
// at least n are there.
func readAll(t testing.TB, topic string, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := kadm.NewClient(kit.Client(t))
	var total int64
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil && ends.Error() == nil {
			total = 0
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
			if total >= int64(n) {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%s holds %d records, want at least %d", topic, total, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cl := kit.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond))
	var recs []*kgo.Record
	for int64(len(recs)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(recs), total, topic)
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// header returns the value of header k of r.
func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// seqs returns the cursors (ferry-cursor) of recs as numbers, in topic
// order per partition.
func seqs(t testing.TB, recs []*kgo.Record) []int64 {
	t.Helper()
	out := make([]int64, 0, len(recs))
	for _, r := range recs {
		n, err := strconv.ParseInt(header(r, ingest.HeaderCursor), 10, 64)
		if err != nil {
			t.Fatalf("record at %d/%d: cursor: %v", r.Partition, r.Offset, err)
		}
		out = append(out, n)
	}
	return out
}

// gapsAndDups checks that the numbers cover from to the highest without a
// gap, and returns how many appear more than once.
func gapsAndDups(t testing.TB, nums []int64, from int64) (dups int) {
	t.Helper()
	seen := map[int64]int{}
	hi := from - 1
	for _, n := range nums {
		seen[n]++
		hi = max(hi, n)
	}
	var missing []int64
	for n := from; n <= hi; n++ {
		switch c := seen[n]; {
		case c == 0:
			missing = append(missing, n)
		case c > 1:
			dups += c - 1
		}
	}
	if len(missing) > 0 {
		if len(missing) > 20 {
			missing = missing[:20]
		}
		t.Errorf("numbers %d to %d: missing %v", from, hi, missing)
	}
	return dups
}
