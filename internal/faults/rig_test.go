package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echopb "github.com/ferryproxy/ferry/examples/proxy/echo"
)

// mode is the size of a run: short for CI, long (longEnv=1) to look
// harder.
type mode struct {
	rate        int              // calls started per second, whether or not earlier ones ended
	maxInflight int              // no call starts while this many run
	warm        int              // a fault waits until the server executes this many calls at once
	shortSleeps [2]time.Duration // most calls sleep in the server for a time in this range
	longSleep   time.Duration    // every fourth call sleeps this long, so it outlives a fault
	brokerDown  time.Duration    // how long the broker stays stopped or killed
	serverDown  time.Duration    // how long the echo server stays killed
	backendDown time.Duration    // how long a killed back end stays down
	after       time.Duration    // load after each fault recovered
	cycles      int              // faults per scenario
	bound       time.Duration    // how long one call may take, retries included, before it counts as lost
}

func currentMode() mode {
	if os.Getenv(longEnv) == "1" {
		return mode{
			rate: 15, maxInflight: 2000, warm: 30, shortSleeps: [2]time.Duration{100 * time.Millisecond, 3 * time.Second}, longSleep: 20 * time.Second,
			brokerDown: 30 * time.Second, serverDown: 15 * time.Second, backendDown: 10 * time.Second,
			after: 15 * time.Second, cycles: 3, bound: 5 * time.Minute,
		}
	}
	return mode{
		rate: 8, maxInflight: 200, warm: 8, shortSleeps: [2]time.Duration{100 * time.Millisecond, 1500 * time.Millisecond}, longSleep: 10 * time.Second,
		brokerDown: 8 * time.Second, serverDown: 8 * time.Second, backendDown: 2 * time.Second,
		after: 3 * time.Second, cycles: 1, bound: 90 * time.Second,
	}
}

// The back ends' group session timeout: the broker's smallest, so that a
// lost member is noticed soon.
const sessionTimeout = 6 * time.Second

// rig is one scenario's processes: the echo server, the back ends and the
// front end, over fresh topics of the suite's broker.
type rig struct {
	t     *testing.T
	m     mode
	dir   string
	adm   *kadm.Client
	group string
	reply string // the reply topic

	echo     *proc
	echoLog  string
	backends []*proc
	front    *proc
	client   echopb.EchoClient
}

var (
	frontReady   = regexp.MustCompile(`msg="serving gRPC" address=(\S+)`)
	backendReady = regexp.MustCompile(`msg="serving back end"`)
	echoReady    = regexp.MustCompile(`echo server listening on (\S+)`)
)

// newRig starts the echo server, backends back-end processes and the front
// end, and waits until the back ends hold the request topic's partitions.
func newRig(t *testing.T, backends int) *rig {
	t.Helper()
	if _, err := kafkaSH("start", true); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, m: currentMode(), dir: t.TempDir(), adm: kadm.NewClient(kit.Client(t))}
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 1, nil)
	r.group, r.reply = "g-"+req, rep

	r.echoLog = filepath.Join(r.dir, "executions.log")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The server's port is chosen once and kept across restarts, as a
	// restarted server's would be.
	var echoAddr string
	r.echo, echoAddr = startProc(t, r.dir, "echo", echoReady,
		[]string{roleEnv + "=echo", echoAddrEnv + "=127.0.0.1:0", echoLogEnv + "=" + r.echoLog}, self)
	r.echo.env = []string{roleEnv + "=echo", echoAddrEnv + "=" + echoAddr, echoLogEnv + "=" + r.echoLog}

	cluster := fmt.Sprintf("clusters: [{name: default, brokers: [%q]}]\nlisteners: {grpc: {address: \"127.0.0.1:0\", shutdown_timeout: 5s}, admin: {address: \"127.0.0.1:0\"}}\nlog: {level: info}\n", suite.brokers)
	backYAML := cluster + fmt.Sprintf(`backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    session_timeout: %s
    concurrency: 256
    commit_interval: 200ms
    drain_timeout: 2s
    deadline: %s
`, req, echoAddr, r.group, sessionTimeout, r.m.bound)
	backFile := filepath.Join(r.dir, "backend.yaml")
	writeFile(t, backFile, backYAML)
	for i := range backends {
		p, _ := startProc(t, r.dir, fmt.Sprintf("backend-%d", i), backendReady, nil, suite.bin, "serve", "-c", backFile)
		r.backends = append(r.backends, p)
	}

	// The route's timeout is the longest allowed, beyond any call's bound:
	// a call waits for its reply as long as the client does, so a request
	// the back end drops shows as a call that never ends (lost), not as a
	// DEADLINE_EXCEEDED from Ferry that the client's retry then repairs.
	frontYAML := cluster + fmt.Sprintf(`protos:
  - files: [echo.proto]
    import_paths: [%q]
routes:
  - name: echo
    when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 24h}
`, filepath.Join(suite.root, "examples", "echo"), req, rep)
	frontFile := filepath.Join(r.dir, "front.yaml")
	writeFile(t, frontFile, frontYAML)
	var frontAddr string
	r.front, frontAddr = startProc(t, r.dir, "front", frontReady, nil, suite.bin, "serve", "-c", frontFile)

	cc, err := grpc.NewClient(frontAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	r.client = echopb.NewEchoClient(cc)
	r.waitGroup(fmt.Sprintf("%d back ends holding partitions", backends), func(g kadm.DescribedGroup) bool {
		return g.State == "Stable" && membersWithPartitions(g) == backends
	})
	return r
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func membersWithPartitions(g kadm.DescribedGroup) int {
	n := 0
	for _, m := range g.Members {
		if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
			n++
		}
	}
	return n
}

// waitGroup waits up to two minutes for the back ends' group to satisfy
// cond, as DescribeGroups shows it.
func (r *rig) waitGroup(what string, cond func(kadm.DescribedGroup) bool) {
	r.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last := "nothing"
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		gs, err := r.adm.DescribeGroups(ctx, r.group)
		cancel()
		if err == nil {
			g := gs[r.group]
			if cond(g) {
				return
			}
			last = fmt.Sprintf("state %s, %d members, %d with partitions", g.State, len(g.Members), membersWithPartitions(g))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("group %s: waited 2m for %s; last saw %s", r.group, what, last)
}

// executions reads the echo server's record: how many times each
// idempotency key started executing, and how many executions were running
// (started, neither ended nor cancelled) as far as the file tells.
func (r *rig) executions() (started map[string]int, running int) {
	r.t.Helper()
	f, err := os.Open(r.echoLog)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	started = map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		what, rest, _ := strings.Cut(sc.Text(), " ")
		key, _, _ := strings.Cut(rest, " ")
		switch what {
		case "start":
			started[key]++
			running++
		case "end", "cancel":
			running--
		}
	}
	if err := sc.Err(); err != nil {
		r.t.Fatal(err)
	}
	return started, running
}

// waitRunning waits up to a minute until the echo server executes at
// least n calls at once, so that a fault hits calls in flight, and reports
// whether it did.
func (r *rig) waitRunning(n int) bool {
	r.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, running := r.executions(); running >= n {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// outcome is what one client call came to.
type outcome struct {
	key      string
	msg      string
	answered bool   // an attempt returned OK
	reply    string // the message it returned
	told     int    // attempts that ended with a non-OK status
	codes    []codes.Code
	waiting  bool // the bound passed while an attempt still waited for its answer
	took     time.Duration
}

// load is the client side: calls started at the mode's rate until
// stopped, each in its own goroutine, so that calls keep coming while
// earlier ones hang in a fault.
type load struct {
	r        *rig
	run      string
	seq      atomic.Int64
	inflight atomic.Int64
	skipped  atomic.Int64    // calls not started because maxInflight ran
	ctx      context.Context // ends every call when the test ends early
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
}

func (r *rig) startLoad() *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{r: r, ctx: ctx, run: fmt.Sprintf("%08x", rand.Uint32()), stop: make(chan struct{})}
	// A test that fails half-way leaves no calls behind it.
	r.t.Cleanup(func() {
		cancel()
		l.stopOnce.Do(func() { close(l.stop) })
		l.wg.Wait()
	})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(r.m.rate))
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			if l.inflight.Load() >= int64(r.m.maxInflight) {
				l.skipped.Add(1)
				continue
			}
			l.inflight.Add(1)
			l.wg.Add(1)
			go func(i int64) {
				defer l.wg.Done()
				defer l.inflight.Add(-1)
				o := l.call(i)
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}(l.seq.Add(1))
		}
	}()
	return l
}

// finish stops sending new calls and waits for the running ones, each of
// which ends within the mode's bound.
func (l *load) finish() []outcome {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outcomes
}

// call makes call i: a fresh idempotency key, a server sleep (every fourth
// call a long one) and attempts with that key until one returns OK or the
// bound passes. A non-OK status is retried after a short pause; an attempt
// still waiting when the bound passes is not.
func (l *load) call(i int64) (o outcome) {
	m := l.r.m
	sleep := m.longSleep
	if i%4 != 0 {
		sleep = m.shortSleeps[0] + rand.N(m.shortSleeps[1]-m.shortSleeps[0])
	}
	key := fmt.Sprintf("k-%s-%06d", l.run, i)
	o = outcome{key: key, msg: fmt.Sprintf("%s sleep=%s", key, sleep.Round(time.Millisecond))}
	ctx, cancel := context.WithTimeout(l.ctx, m.bound)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "idempotency-key", key)
	deadline, _ := ctx.Deadline()
	start := time.Now()
	defer func() { o.took = time.Since(start) }()
	for {
		resp, err := l.r.client.UnaryEcho(ctx, &echopb.EchoRequest{Message: o.msg})
		if err == nil {
			o.answered, o.reply = true, resp.GetMessage()
			return o
		}
		// A DEADLINE_EXCEEDED in the bound's last second is the bound
		// itself: the front end's copy of the client's deadline may fire a
		// moment before the client's own.
		if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded && time.Until(deadline) < time.Second {
			o.waiting = true
			return o
		}
		o.told++
		o.codes = append(o.codes, status.Code(err))
		select {
		case <-time.After(200*time.Millisecond + rand.N(300*time.Millisecond)):
		case <-ctx.Done():
			return o
		}
	}
}

// report is a scenario's counts; docs/FAULTS.md defines each.
type report struct {
	scenario      string
	sent          int
	answered      int
	failedVisibly int // calls told a non-OK status at least once
	gaveUp        int // of those, calls never answered OK within the bound
	lostCalls     int // never answered (lostWaiting) or answered OK without an execution or with another message (lostAnswer)
	lostWaiting   int
	lostAnswer    int
	twice         int           // keys the server started executing more than once
	slowest       time.Duration // the longest an answered call took, retries included
	atFault       string
	codes         map[codes.Code]int
	lostKeys      []string
	lost          map[string]bool
	gaveUpKeys    []string
}

// count turns the outcomes and the server's record into the report.
func (r *rig) count(scenario string, outs []outcome, atFault string) report {
	started, _ := r.executions()
	rep := report{scenario: scenario, sent: len(outs), atFault: atFault, codes: map[codes.Code]int{}, lost: map[string]bool{}}
	for _, o := range outs {
		if o.told > 0 {
			rep.failedVisibly++
		}
		for _, c := range o.codes {
			rep.codes[c]++
		}
		switch {
		case o.answered && o.reply == o.msg && started[o.key] > 0:
			rep.answered++
			rep.slowest = max(rep.slowest, o.took)
		case o.answered:
			rep.lostAnswer++
			rep.lost[o.key] = true
			rep.lostKeys = append(rep.lostKeys, o.key+" (answered OK, never executed or wrong message)")
		case o.waiting:
			rep.lostWaiting++
			rep.lost[o.key] = true
			rep.lostKeys = append(rep.lostKeys, fmt.Sprintf("%s (no answer within %s; executed %d times)", o.key, r.m.bound, started[o.key]))
		default:
			rep.gaveUp++
			rep.gaveUpKeys = append(rep.gaveUpKeys, fmt.Sprintf("%s (%d non-OK answers, the last %s after %s; executed %d times)",
				o.key, o.told, o.codes[len(o.codes)-1], o.took.Round(time.Millisecond), started[o.key]))
		}
		if started[o.key] > 1 {
			rep.twice++
		}
	}
	rep.lostCalls = rep.lostWaiting + rep.lostAnswer
	return rep
}

func (rep report) header() string {
	return fmt.Sprintf("%-30s %5s %8s %10s %7s %5s %13s %5s %8s  %s", "scenario", "sent", "answered", "failed-vis", "gave-up", "lost", "(wait/answer)", "twice", "slowest", "in flight at fault")
}

func (rep report) String() string {
	return fmt.Sprintf("%-30s %5d %8d %10d %7d %5d %13s %5d %8s  %s", rep.scenario, rep.sent, rep.answered, rep.failedVisibly, rep.gaveUp, rep.lostCalls,
		fmt.Sprintf("(%d/%d)", rep.lostWaiting, rep.lostAnswer), rep.twice, rep.slowest.Round(100*time.Millisecond), rep.atFault)
}

func (rep report) codeList() string {
	var parts []string
	for c, n := range rep.codes {
		parts = append(parts, fmt.Sprintf("%s×%d", c, n))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// runScenario drives load through the rig, injects fault mode.cycles
// times while calls run, then stops the load, waits for every call and
// reports. It fails the test when a call was lost.
func (r *rig) runScenario(fault func()) {
	t := r.t
	start := time.Now()
	l := r.startLoad()
	var atFault []string
	for c := range r.m.cycles {
		if !r.waitRunning(r.m.warm) {
			// After a fault this means Ferry did not recover; the counts
			// below still say what became of the calls.
			t.Errorf("before fault %d: the echo server never ran %d calls at once within a minute", c+1, r.m.warm)
			break
		}
		_, running := r.executions()
		atFault = append(atFault, fmt.Sprintf("%d calls/%d executing", l.inflight.Load(), running))
		t.Logf("fault %d of %d at %s: %s", c+1, r.m.cycles, time.Since(start).Round(time.Millisecond), atFault[len(atFault)-1])
		fault()
		t.Logf("fault %d recovered at %s", c+1, time.Since(start).Round(time.Millisecond))
		time.Sleep(r.m.after)
	}
	outs := l.finish()
	if n := l.skipped.Load(); n > 0 {
		t.Logf("%d calls not started: %d were running", n, r.m.maxInflight)
	}
	rep := r.count(t.Name(), outs, strings.Join(atFault, "; "))
	suite.mu.Lock()
	suite.reports = append(suite.reports, rep)
	suite.mu.Unlock()
	t.Logf("done in %s\n%s\n%s\nnon-OK statuses the client saw: %s", time.Since(start).Round(time.Second), rep.header(), rep, rep.codeList())
	if len(rep.gaveUpKeys) > 0 {
		t.Logf("calls that failed visibly until the bound, e.g.:\n  %s", strings.Join(firstN(rep.gaveUpKeys, 10), "\n  "))
	}
	if rep.lostCalls > 0 {
		shown := firstN(rep.lostKeys, 10)
		t.Errorf("%d of %d calls lost (want 0), e.g.:\n  %s", rep.lostCalls, rep.sent, strings.Join(shown, "\n  "))
		t.Logf("final replies on the reply topic for the lost calls: %s", r.finalReplies(rep.lost))
	}
	if rep.answered == 0 {
		t.Errorf("no call was answered")
	}
}

// printSummary prints every scenario's counts, so that a run without -v
// shows them too.
func printSummary() {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	if len(suite.reports) == 0 {
		return
	}
	fmt.Println("fault suite summary:")
	fmt.Println(suite.reports[0].header())
	for _, rep := range suite.reports {
		fmt.Println(rep)
	}
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// finalReplies tells, for the lost calls, how many have a final reply
// record (a null value) on the reply topic: whether the back end never
// wrote one or the front end never delivered it.
func (r *rig) finalReplies(lost map[string]bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := r.adm.ListEndOffsets(ctx, r.reply)
	if err != nil {
		return "unknown: " + err.Error()
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	cl := kit.Client(r.t, kgo.ConsumeTopics(r.reply), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	finals := map[string]int{}
	done := func() bool {
		for p, end := range want {
			if end > 0 {
				return false
			}
			delete(want, p)
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return "unknown: reading the reply topic timed out"
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if rec.Offset+1 >= want[rec.Partition] {
				want[rec.Partition] = 0
			}
			if rec.Value != nil {
				return
			}
			// The record key is the correlation id, KEY-SUFFIX.
			k := string(rec.Key)
			if i := strings.LastIndexByte(k, '-'); i > 0 && lost[k[:i]] {
				finals[k[:i]]++
			}
		})
	}
	return fmt.Sprintf("%d of %d lost calls have one (so the front end did not deliver it); the others have none (so the back end never wrote one)", len(finals), len(lost))
}
