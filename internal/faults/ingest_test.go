package faults_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
	"github.com/ferryproxy/ferry/internal/ingest"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// sourceMode is the size of a sources scenario.
type sourceMode struct {
	kills     []sourceKill  // TestSourceKill's faults, in order
	failovers int           // TestSourceFailover's kills, of each instance in turn
	flowing   int64         // ticks every source streams before a kill and after a restart
	after     time.Duration // the sources run this long after the last recovery
	steady    time.Duration // failover: how long the steady state is watched for calls open twice
}

// sourceKill is one kill -9 of TestSourceKill.
type sourceKill struct {
	// soon kills Ferry as soon as its sources stream again after the
	// previous restart (soonTicks ticks), rather than after the mode's
	// flowing ticks: few records of the new run are in the topic then,
	// and a 3-partition topic's partitions hold the newest records of
	// different runs.
	soon bool
	// down is how long the killed Ferry stays down; longer than the
	// session timeout, its group member is gone when it starts again.
	down time.Duration
}

// soonTicks is what a soon kill waits for.
const soonTicks = 50

func currentSourceMode() sourceMode {
	if os.Getenv(longEnv) == "1" {
		return sourceMode{
			kills:     []sourceKill{{down: time.Second}, {down: 2 * sessionTimeout}, {soon: true, down: 3 * time.Second}, {soon: true, down: time.Second}, {down: time.Second}},
			failovers: 3, flowing: 5000, after: 15 * time.Second, steady: 10 * time.Second,
		}
	}
	return sourceMode{
		kills:     []sourceKill{{down: time.Second}, {soon: true, down: time.Second}},
		failovers: 1, flowing: 1500, after: 4 * time.Second, steady: 4 * time.Second,
	}
}

// Every source of these scenarios asks for a tick every tickInterval from
// seq 1 on and keeps at most sourceInFlight records unacknowledged: the
// bound of the records written twice per crash.
const (
	tickInterval   = 2 * time.Millisecond
	sourceInFlight = 200
	// takeoverBound is how long a killed instance's sources may take to
	// run again on another: the session timeout plus a margin for the
	// rebalance and for reading back where each source stopped.
	takeoverBound = sessionTimeout + 30*time.Second
)

var sourceReady = regexp.MustCompile(`msg="serving gRPC"`)

// tickCall is one Ticks call the ticker served.
type tickCall struct {
	opened, closed time.Time // closed is zero while the call is open
	start          int64     // the request's start
	sent           int64     // ticks sent
	firstSent      time.Time
}

// ticker is the example's ticker served in the test process: it tells the
// calls of the sources apart by their x-source metadata, counts the ticks
// sent and the calls open at once per source, and measures how long two
// calls of one source were open together.
type ticker struct {
	tick.UnimplementedTickerServer
	inner tick.Server
	addr  string

	mu       sync.Mutex
	calls    map[string][]*tickCall
	open     map[string]int
	maxOpen  map[string]int       // since the last resetMaxOpen
	twice    map[string]time.Time // when the source's second call opened, while two are
	overlaps map[string][]time.Duration
}

func startTicker(t *testing.T) *ticker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tk := &ticker{
		addr: lis.Addr().String(), calls: map[string][]*tickCall{}, open: map[string]int{}, maxOpen: map[string]int{},
		twice: map[string]time.Time{}, overlaps: map[string][]time.Duration{},
	}
	srv := grpc.NewServer()
	tick.RegisterTickerServer(srv, tk)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return tk
}

// Ticks serves the example's ticks and keeps the counts.
func (tk *ticker) Ticks(req *tick.TicksRequest, stream grpc.ServerStreamingServer[tick.Tick]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	src := strings.Join(md.Get("x-source"), "")
	c := &tickCall{opened: time.Now(), start: req.GetStart()}
	tk.mu.Lock()
	tk.calls[src] = append(tk.calls[src], c)
	tk.open[src]++
	tk.maxOpen[src] = max(tk.maxOpen[src], tk.open[src])
	if tk.open[src] == 2 {
		tk.twice[src] = c.opened
	}
	tk.mu.Unlock()
	defer func() {
		now := time.Now()
		tk.mu.Lock()
		c.closed = now
		tk.open[src]--
		if tk.open[src] == 1 {
			tk.overlaps[src] = append(tk.overlaps[src], now.Sub(tk.twice[src]))
		}
		tk.mu.Unlock()
	}()
	return tk.inner.Ticks(req, &countingStream{ServerStreamingServer: stream, tk: tk, call: c})
}

// countingStream counts the ticks a call sent.
type countingStream struct {
	grpc.ServerStreamingServer[tick.Tick]
	tk   *ticker
	call *tickCall
}

func (s *countingStream) Send(t *tick.Tick) error {
	if err := s.ServerStreamingServer.Send(t); err != nil {
		return err
	}
	s.tk.mu.Lock()
	if s.call.sent == 0 {
		s.call.firstSent = time.Now()
	}
	s.call.sent++
	s.tk.mu.Unlock()
	return nil
}

// sent returns the ticks sent to src so far, over all its calls.
func (tk *ticker) sent(src string) int64 {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	var n int64
	for _, c := range tk.calls[src] {
		n += c.sent
	}
	return n
}

// openCall returns the index of src's open call, -1 when none is.
func (tk *ticker) openCall(src string) int {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	for i := len(tk.calls[src]) - 1; i >= 0; i-- {
		if tk.calls[src][i].closed.IsZero() {
			return i
		}
	}
	return -1
}

// call returns a copy of src's call i.
func (tk *ticker) call(src string, i int) tickCall {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return *tk.calls[src][i]
}

func (tk *ticker) resetMaxOpen() {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	for src, n := range tk.open {
		tk.maxOpen[src] = n
	}
}

// opens returns the most calls of src open at once since the last
// resetMaxOpen, the calls src had in all, and how long each stretch with
// two open calls lasted.
func (tk *ticker) opens(src string) (maxOpen, calls int, overlaps []time.Duration) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.maxOpen[src], len(tk.calls[src]), append([]time.Duration(nil), tk.overlaps[src]...)
}

// waitFlowing waits until every source in srcs has a call open and sent n
// more ticks than from says, and fails the test if that takes longer than
// within.
func (tk *ticker) waitFlowing(t *testing.T, what string, srcs []string, from map[string]int64, n int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var late []string
		for _, src := range srcs {
			if got := tk.sent(src) - from[src]; got < n || tk.openCall(src) < 0 {
				late = append(late, fmt.Sprintf("%s: %d of %d ticks, open call %v", src, got, n, tk.openCall(src) >= 0))
			}
		}
		if len(late) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: waited %s for the sources to stream; %s", what, within, strings.Join(late, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tk *ticker) sentAll(srcs []string) map[string]int64 {
	m := map[string]int64{}
	for _, src := range srcs {
		m[src] = tk.sent(src)
	}
	return m
}

// sourceSpec is one source of a scenario and its topic.
type sourceSpec struct {
	name       string
	topic      string
	partitions int32
}

// sourcesYAML is a Ferry configuration with the ticker's sources, every
// instance sharing them through group.
func sourcesYAML(tk *ticker, group, prefix string, specs []sourceSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `clusters: [{name: default, brokers: [%q]}]
listeners: {grpc: {address: "127.0.0.1:0", shutdown_timeout: 5s}, admin: {address: "127.0.0.1:0"}}
log: {level: info}
protos:
  - files: [ticker.proto]
    import_paths: [%q]
ingest: {group_id: %s, topic_prefix: %s, session_timeout: %s, drain_timeout: 10s}
sources:
`, suite.brokers, filepath.Join(suite.root, "examples", "ingest"), group, prefix, sessionTimeout)
	for _, s := range specs {
		fmt.Fprintf(&b, `  - name: %s
    target: %s
    metadata: {x-source: %s}
    method: example.ingest.Ticker/Ticks
    request: {start: 1, interval_ms: %d}
    topic: %s
    key: "{symbol}"
    cursor: {field: seq, request_field: start, increment: 1}
    max_in_flight: %d
    reconnect: {initial_backoff: 100ms, max_backoff: 1s}
`, s.name, tk.addr, s.name, tickInterval.Milliseconds(), s.topic, sourceInFlight)
	}
	return b.String()
}

// terminate stops p with SIGTERM and fails the test unless it exits
// within 30 seconds (it is killed then).
func (p *proc) terminate() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not exit within 30s of SIGTERM; killing it", p.name)
		p.kill()
	}
}

// exited reports whether p's process has ended.
func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// seqCount is what a source's topic holds: its cursors (ferry-cursor, the
// tick's seq), checked for gaps.
type seqCount struct {
	records  int
	distinct int
	highest  int64
	dups     int
	missing  []int64 // the first missing numbers
	nMissing int
	foreign  int            // records of another source, or without a cursor
	gens     map[string]int // records per group generation (ferry-seq's first part)
}

// readSeqs reads every record of the spec's topic and counts its cursors
// from 1 to the highest.
func readSeqs(t *testing.T, s sourceSpec) seqCount {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(kit.Client(t))
	ends, err := adm.ListEndOffsets(ctx, s.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("listing the end offsets of %s: %v", s.topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl := kit.Client(t, kgo.ConsumeTopics(s.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[int64]int{}
	c := seqCount{gens: map[string]int{}}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: timed out with partitions %v still short of their end", s.topic, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			c.records++
			n, err := strconv.ParseInt(recordHeader(r, ingest.HeaderCursor), 10, 64)
			if err != nil || recordHeader(r, ingest.HeaderSource) != s.name {
				c.foreign++
				return
			}
			seen[n]++
			c.highest = max(c.highest, n)
			gen, _, _ := strings.Cut(recordHeader(r, ingest.HeaderSeq), "-")
			c.gens[gen]++
		})
	}
	for n := int64(1); n <= c.highest; n++ {
		switch k := seen[n]; {
		case k == 0:
			c.nMissing++
			if len(c.missing) < 20 {
				c.missing = append(c.missing, n)
			}
		case k > 1:
			c.dups += k - 1
		}
	}
	c.distinct = len(seen)
	return c
}

func recordHeader(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// checkSeqs reads each source's topic, logs its counts and fails the test
// on a gap, a foreign record, an empty topic or more duplicates than
// maxDups.
func checkSeqs(t *testing.T, tk *ticker, specs []sourceSpec, maxDups int) {
	t.Helper()
	t.Logf("%-8s %10s %7s %8s %8s %5s %9s  %s", "source", "partitions", "sent", "records", "highest", "dups", "missing", "records per generation")
	for _, s := range specs {
		c := readSeqs(t, s)
		t.Logf("%-8s %10d %7d %8d %8d %5d %9d  %v", s.name, s.partitions, tk.sent(s.name), c.records, c.highest, c.dups, c.nMissing, c.gens)
		switch {
		case c.highest == 0:
			t.Errorf("source %s: topic %s holds no record of it", s.name, s.topic)
		case c.nMissing > 0:
			t.Errorf("source %s: %d of the seqs 1 to %d missing from %s (want none), the first %v", s.name, c.nMissing, c.highest, s.topic, c.missing)
		}
		if c.foreign > 0 {
			t.Errorf("source %s: %d records of %s are not the source's or have no numeric %s", s.name, c.foreign, s.topic, ingest.HeaderCursor)
		}
		if c.dups > maxDups {
			t.Errorf("source %s: %d seqs written twice, want at most %d (max_in_flight %d per kill)", s.name, c.dups, maxDups, sourceInFlight)
		}
	}
}

func sourceNames(specs []sourceSpec) []string {
	var out []string
	for _, s := range specs {
		out = append(out, s.name)
	}
	return out
}

// sourceScenario is what the sources' scenarios share: the ticker, and a
// Ferry configuration with a fresh topic, group and coordination topics.
type sourceScenario struct {
	tk    *ticker
	dir   string
	cfg   string // the configuration file
	group string
	specs []sourceSpec
}

// newSourceScenario makes sure the broker runs, starts the ticker and
// writes the configuration of the sources named in partitions, each with
// a fresh topic of that many partitions; sources are sorted by name.
func newSourceScenario(t *testing.T, partitions map[string]int32) *sourceScenario {
	t.Helper()
	if _, err := kafkaSH("start", true); err != nil {
		t.Fatal(err)
	}
	sc := &sourceScenario{tk: startTicker(t), dir: t.TempDir(), group: testkit.Name(t, "group")}
	for _, name := range slices.Sorted(maps.Keys(partitions)) {
		sc.specs = append(sc.specs, sourceSpec{name: name, topic: kit.Topic(t, partitions[name], nil), partitions: partitions[name]})
	}
	sc.cfg = filepath.Join(sc.dir, "ferry.yaml")
	writeFile(t, sc.cfg, sourcesYAML(sc.tk, sc.group, testkit.Name(t, "coord")+"-", sc.specs))
	return sc
}

// TestSourceKill kills the only Ferry instance (SIGKILL) while its
// sources stream, starts it again with the same configuration and checks
// that each source's topic holds every tick from 1 on, with at most
// max_in_flight written twice per kill.
func TestSourceKill(t *testing.T) {
	setup(t)
	m := currentSourceMode()
	sc := newSourceScenario(t, map[string]int32{"three": 3, "one": 1})
	tk, dir, cfg, specs := sc.tk, sc.dir, sc.cfg, sc.specs
	srcs := sourceNames(specs)
	start := time.Now()
	p, _ := startProc(t, dir, "ferry", sourceReady, nil, suite.bin, "serve", "-c", cfg)
	restarted := start
	tk.waitFlowing(t, "the first start", srcs, nil, m.flowing, takeoverBound)
	for k, f := range m.kills {
		from := tk.sentAll(srcs)
		if f.soon {
			tk.waitFlowing(t, fmt.Sprintf("before kill %d", k+1), srcs, from, soonTicks, takeoverBound)
		} else if k > 0 {
			tk.waitFlowing(t, fmt.Sprintf("before kill %d", k+1), srcs, from, m.flowing, takeoverBound)
		}
		t.Logf("kill %d of %d at %s, %s after the (re)start: ticks sent %v", k+1, len(m.kills), time.Since(start).Round(time.Millisecond),
			time.Since(restarted).Round(time.Millisecond), tk.sentAll(srcs))
		p.kill()
		time.Sleep(f.down)
		p.start()
		restarted = time.Now()
		tk.waitFlowing(t, fmt.Sprintf("after kill %d", k+1), srcs, tk.sentAll(srcs), 1, takeoverBound)
		t.Logf("kill %d: down %s; the sources stream again %s after the restart", k+1, f.down, time.Since(restarted).Round(time.Millisecond))
	}
	tk.waitFlowing(t, "after the last kill", srcs, tk.sentAll(srcs), m.flowing, takeoverBound)
	for _, src := range srcs {
		if n, calls, _ := tk.opens(src); n != 1 {
			t.Errorf("source %s: %d calls open at once (of %d), want 1: one instance runs it", src, n, calls)
		}
	}
	time.Sleep(m.after)
	p.terminate()
	t.Logf("done in %s", time.Since(start).Round(time.Second))
	checkSeqs(t, tk, specs, sourceInFlight*len(m.kills))
}

// TestSourceFailover runs two Ferry instances that share three sources.
// Each source's call must be open on one instance at a time while the
// group is steady; when the instance holding some sources is killed
// (SIGKILL), they must run again on the other within takeoverBound, each
// topic holding every tick from 1 on.
func TestSourceFailover(t *testing.T) {
	setup(t)
	m := currentSourceMode()
	sc := newSourceScenario(t, map[string]int32{"s0": 3, "s1": 1, "s2": 1})
	tk, dir, cfg, specs, group := sc.tk, sc.dir, sc.cfg, sc.specs, sc.group
	srcs := sourceNames(specs)
	adm := kadm.NewClient(kit.Client(t))
	start := time.Now()
	var procs [2]*proc
	procs[0], _ = startProc(t, dir, "ferry-0", sourceReady, nil, suite.bin, "serve", "-c", cfg)
	tk.waitFlowing(t, "ferry-0 started", srcs, nil, m.flowing/2, takeoverBound)
	procs[1], _ = startProc(t, dir, "ferry-1", sourceReady, nil, suite.bin, "serve", "-c", cfg)
	var takeovers []string
	for k := range m.failovers {
		waitSourceGroup(t, adm, group, 2)
		tk.waitFlowing(t, "both instances running", srcs, tk.sentAll(srcs), m.flowing/2, takeoverBound)

		// The steady state: no call of a source may open while another of
		// it is open.
		tk.resetMaxOpen()
		time.Sleep(m.steady)
		for _, src := range srcs {
			if n, _, _ := tk.opens(src); n != 1 {
				t.Errorf("steady state before kill %d: source %s had %d calls open at once, want 1", k+1, src, n)
			}
		}

		victim := procs[k%2]
		openAt := map[string]int{}
		for _, src := range srcs {
			openAt[src] = tk.openCall(src)
		}
		killed := time.Now()
		victim.kill()
		t.Logf("kill %d of %d: %s at %s", k+1, m.failovers, victim.name, killed.Sub(start).Round(time.Millisecond))
		// The killed instance's calls end as its connections close.
		time.Sleep(2 * time.Second)
		var moved []string
		for _, src := range srcs {
			if i := openAt[src]; i < 0 || !tk.call(src, i).closed.IsZero() {
				moved = append(moved, src)
			}
		}
		if len(moved) == 0 {
			t.Fatalf("kill %d: %s held no source (every call open at the kill is still open)", k+1, victim.name)
		}
		for _, src := range moved {
			deadline := killed.Add(takeoverBound)
			for {
				i := tk.openCall(src)
				if i > openAt[src] {
					if c := tk.call(src, i); c.sent > 0 {
						took := c.firstSent.Sub(killed).Round(time.Millisecond)
						takeovers = append(takeovers, fmt.Sprintf("%s %s", src, took))
						t.Logf("kill %d: source %s streams again on the other instance %s after the kill (call from seq %d)", k+1, src, took, c.start)
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("kill %d: source %s did not stream again within %s of the kill (session_timeout %s + 30s)", k+1, src, takeoverBound, sessionTimeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		tk.waitFlowing(t, fmt.Sprintf("after kill %d", k+1), srcs, tk.sentAll(srcs), m.flowing/2, takeoverBound)
		if k+1 < m.failovers {
			victim.start()
		}
	}
	time.Sleep(m.after)
	for _, p := range procs {
		if !p.exited() {
			p.terminate()
		}
	}
	t.Logf("done in %s; takeovers: %s", time.Since(start).Round(time.Second), strings.Join(takeovers, ", "))
	for _, src := range srcs {
		_, calls, overlaps := tk.opens(src)
		t.Logf("source %s: %d calls; two calls open at once %d times %v", src, calls, len(overlaps), overlaps)
		for _, d := range overlaps {
			if d > time.Second {
				t.Errorf("source %s: two calls open at once for %s, longer than a handover (1s)", src, d.Round(time.Millisecond))
			}
		}
	}
	checkSeqs(t, tk, specs, sourceInFlight*m.failovers)
}

// waitSourceGroup waits up to two minutes until the ingest group is
// stable with members instances each holding sources.
func waitSourceGroup(t *testing.T, adm *kadm.Client, group string, members int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last := "nothing"
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gs, err := adm.DescribeGroups(ctx, group)
		cancel()
		if err == nil {
			g := gs[group]
			if g.State == "Stable" && len(g.Members) == members && membersWithPartitions(g) == members {
				return
			}
			last = fmt.Sprintf("state %s, %d members, %d with sources", g.State, len(g.Members), membersWithPartitions(g))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("ingest group %s: waited 2m for %d instances holding sources; last saw %s", group, members, last)
}
