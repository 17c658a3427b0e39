package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/testkit"
)

const (
	takeMethod = "/jobs.Jobs/Take"
	ackMethod  = "/jobs.Jobs/Ack"
)

// groupConfig is a configuration with one group route on topic; group is
// the route's group section (YAML flow mapping entries) and when its
// methods.
func groupConfig(t testing.TB, topic, group string, when ...string) (*config.Config, error) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "jobs.proto"), testkit.JobsProto)
	if len(when) == 0 {
		when = []string{"jobs.Jobs/Take", "jobs.Jobs/Ack"}
	}
	var conds []string
	for _, w := range when {
		conds = append(conds, "{method: "+w+"}")
	}
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}
  admin: {address: ""}
protos:
  - files: [jobs.proto]
log:
  level: ${FERRY_TEST_LOG:-warn}
kafka_api:
  consume: {commit_interval: 50ms, session_timeout: 6s}
routes:
  - name: jobs
    when: [%s]
    fetch:
      topic: %s
      group: {id: %s-workers, %s}
`, kit.ClusterYAML(t), strings.Join(conds, ", "), topic, topic, group)
	return config.Parse(filepath.Join(dir, "ferry.yaml"), []byte(y))
}

func startGroup(t testing.TB, topic, group string) *app.App {
	t.Helper()
	cfg, err := groupConfig(t, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	return startConfig(t, cfg)
}

// job is one response of Take.
type job struct {
	name string
	id   []byte
}

// taker is an open Take call.
type taker struct {
	s      grpc.ClientStream
	cancel context.CancelFunc
}

func take(t testing.TB, cc *grpc.ClientConn) *taker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, takeMethod)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	empty := []byte{}
	if err := s.SendMsg(&empty); err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &taker{s: s, cancel: cancel}
}

// next reads one job, failing the test after 15s.
func (tk *taker) next(t testing.TB) job {
	t.Helper()
	type got struct {
		b   []byte
		err error
	}
	ch := make(chan got, 1)
	go func() {
		var b []byte
		err := tk.s.RecvMsg(&b)
		ch <- got{b, err}
	}()
	select {
	case g := <-ch:
		if g.err != nil {
			t.Fatalf("receiving a job: %v", g.err)
		}
		id, ok := fetch.IDFromMessage(g.b, 32767)
		if !ok {
			t.Fatalf("job %x has no message id", g.b)
		}
		return job{name: unecho(g.b), id: id}
	case <-time.After(15 * time.Second):
		tk.cancel()
		<-ch
		t.Fatal("no job within 15s")
		return job{}
	}
}

// quiet checks that no job comes within d, and ends the call.
func (tk *taker) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		var b []byte
		err := tk.s.RecvMsg(&b)
		if err == nil {
			err = fmt.Errorf("got job %q", unecho(b))
		}
		ch <- err
	}()
	select {
	case err := <-ch:
		t.Fatalf("the stream went on: %v", err)
	case <-time.After(d):
	}
	tk.cancel()
	<-ch
}

// ack calls Ack with ids.
func ack(cc *grpc.ClientConn, ids ...[]byte) error {
	var req []byte
	for _, id := range ids {
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, id)
	}
	req = append([]byte{}, req...)
	var resp []byte
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cc.Invoke(ctx, ackMethod, &req, &resp)
}

func mustAck(t testing.TB, cc *grpc.ClientConn, ids ...[]byte) {
	t.Helper()
	if err := ack(cc, ids...); err != nil {
		t.Fatalf("acknowledging: %v", err)
	}
}

func jobNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("job-%d", i)
	}
	return out
}

// TestGroupStreamSplitsRecords: two callers of one group route share the
// topic: each record goes to exactly one of them, and every record is
// delivered. A caller with max_unacked_per_stream records unacknowledged
// gets no more, so the other gets the next.
func TestGroupStreamSplitsRecords(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(10)...)
	a := startGroup(t, topic, "ack: method, max_unacked_per_stream: 1")
	cc := dial(t, a)
	callers := []*taker{take(t, cc), take(t, cc)}
	got := map[string]int{}
	for range 5 {
		var ids [][]byte
		for i, c := range callers {
			j := c.next(t)
			got[j.name]++
			if p, off, err := fetch.ParseGroupID(j.id); err != nil || p != 0 {
				t.Fatalf("caller %d: message id %x: partition %d, %v", i, j.id, p, err)
			} else if want := fmt.Sprintf("job-%d", off); j.name != want {
				t.Fatalf("caller %d: %s has the message id of offset %d", i, j.name, off)
			}
			ids = append(ids, j.id)
		}
		mustAck(t, cc, ids...)
	}
	for _, name := range jobNames(10) {
		if got[name] != 1 {
			t.Errorf("%s delivered %d times, want once: %v", name, got[name], got)
		}
	}
	for _, c := range callers {
		c.quiet(t, 300*time.Millisecond)
	}
}

// TestGroupStreamAckTimeout: a record not acknowledged within ack_timeout
// is delivered again, with the same message id; once acknowledged, the
// next record follows.
func TestGroupStreamAckTimeout(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(2)...)
	a := startGroup(t, topic, "ack_timeout: 300ms, max_unacked_per_stream: 1")
	cc := dial(t, a)
	c := take(t, cc)
	first := c.next(t)
	start := time.Now()
	again := c.next(t)
	if first.name != "job-0" || again.name != first.name || string(again.id) != string(first.id) {
		t.Fatalf("got %s (%x), then %s (%x): want job-0 twice", first.name, first.id, again.name, again.id)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("delivered again after %v, before the ack timeout", d)
	}
	mustAck(t, cc, again.id)
	if j := c.next(t); j.name != "job-1" {
		t.Fatalf("after the ack: %s, want job-1", j.name)
	}
}

// TestGroupStreamDisconnect: what a caller was sent and did not
// acknowledge goes to the other callers as soon as it disconnects, long
// before the ack timeout.
func TestGroupStreamDisconnect(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(2)...)
	a := startGroup(t, topic, "ack_timeout: 1m, max_unacked_per_stream: 1")
	cc := dial(t, a)
	first, second := take(t, cc), take(t, cc)
	lost := first.next(t)
	kept := second.next(t)
	// Both callers wait for a record from the start: which gets which is
	// the engine's choice.
	if lost.name == kept.name {
		t.Fatalf("both callers got %s", lost.name)
	}
	mustAck(t, cc, kept.id)
	start := time.Now()
	first.cancel()
	if j := second.next(t); j.name != lost.name || string(j.id) != string(lost.id) {
		t.Fatalf("after the first caller left: %s, want %s", j.name, lost.name)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("delivered again after %v", d)
	}
}

// TestGroupStreamDeadLetter: a record delivered max_deliveries times
// without an acknowledgement goes to the dead-letter topic, and the
// stream goes on with the next.
func TestGroupStreamDeadLetter(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(2)...)
	a := startGroup(t, topic, `ack_timeout: 200ms, max_deliveries: 2, dead_letter_topic: "{topic}.dead", max_unacked_per_stream: 1`)
	cc := dial(t, a)
	c := take(t, cc)
	for i := range 2 {
		if j := c.next(t); j.name != "job-0" {
			t.Fatalf("delivery %d: %s, want job-0", i+1, j.name)
		}
	}
	j := c.next(t)
	if j.name != "job-1" {
		t.Fatalf("after two deliveries of job-0: %s, want job-1", j.name)
	}
	mustAck(t, cc, j.id)
	recs := readTopic(t, topic+".dead", 1)
	if got := unecho(recs[0].Value); got != "job-0" {
		t.Fatalf("dead letter %q, want job-0", got)
	}
	if v, _ := header(recs[0], "ferry-dead-letter-deliveries"); v != "2" {
		t.Errorf("ferry-dead-letter-deliveries = %q, want 2", v)
	}
	if v, _ := header(recs[0], "ferry-dead-letter-group"); v != topic+"-workers" {
		t.Errorf("ferry-dead-letter-group = %q, want %s-workers", v, topic)
	}
}

// TestGroupStreamAckErrors: acknowledging what cannot be acknowledged
// fails with a status that says why.
func TestGroupStreamAckErrors(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, "job-0")
	a := startGroup(t, topic, "ack: method")
	cc := dial(t, a)
	// No stream yet: this instance is not in the group.
	if err := ack(cc, fetch.GroupID(0, 0)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ack before any stream: %v, want FAILED_PRECONDITION", err)
	}
	c := take(t, cc)
	j := c.next(t)
	for _, tc := range []struct {
		name string
		ids  [][]byte
		code codes.Code
		msg  string
	}{
		{"no id", nil, codes.InvalidArgument, "no message id"},
		{"garbage", [][]byte{{0x7f}}, codes.InvalidArgument, "starts with 127"},
		{"fan-out id", [][]byte{{1, 2, 0, 2}}, codes.InvalidArgument, "stream position"},
		{"truncated", [][]byte{{2, 0}}, codes.InvalidArgument, "truncated"},
		{"never delivered", [][]byte{fetch.GroupID(0, 99)}, codes.InvalidArgument, "was not delivered"},
		{"one of two", [][]byte{j.id, fetch.GroupID(0, 99)}, codes.InvalidArgument, "1 of the request's 2 message ids"},
	} {
		err := ack(cc, tc.ids...)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
	// The good id of "one of two" was acknowledged; twice is harmless.
	mustAck(t, cc, j.id)
	c.quiet(t, 300*time.Millisecond)
}

// TestGroupStreamAutoAck: with ack: auto, a record sent counts as
// acknowledged: a caller that left without acknowledging anything leaves
// nothing to deliver again.
func TestGroupStreamAutoAck(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	produceMsgs(t, prod, topic, "k", nil, jobNames(3)...)
	cfg, err := groupConfig(t, topic, "ack: auto, ack_timeout: 200ms", "jobs.Jobs/Take")
	if err != nil {
		t.Fatal(err)
	}
	a := startConfig(t, cfg)
	cc := dial(t, a)
	c := take(t, cc)
	var names []string
	for range 3 {
		names = append(names, c.next(t).name)
	}
	if !slices.Equal(names, jobNames(3)) {
		t.Fatalf("got %q", names)
	}
	c.cancel()
	// A record sent to a stream whose caller has gone, before Ferry saw it
	// go, counts as acknowledged: that is ack: auto. Write the next one
	// once the first call has ended.
	for deadline := time.Now().Add(10 * time.Second); a.CallsRunning() > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the first caller's call did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	produceMsgs(t, prod, topic, "k", nil, "job-3")
	// Well past the ack timeout: nothing of the first caller comes again.
	time.Sleep(400 * time.Millisecond)
	if j := take(t, cc).next(t); j.name != "job-3" {
		t.Fatalf("the second caller got %s, want job-3", j.name)
	}
}

// TestGroupStreamMethods: ferry validate reports methods a group route
// cannot serve, at the condition's line.
func TestGroupStreamMethods(t *testing.T) {
	for _, tc := range []struct {
		name, group string
		when        []string
		want        string
	}{
		{"ack method in auto mode", "ack: auto", []string{"jobs.Jobs/Take", "jobs.Jobs/Ack"}, "ack mode is auto"},
		{"ack request without the field", "ack_id_field: 7", []string{"jobs.Jobs/Take", "jobs.Jobs/Ack"}, "needs a bytes field (repeated for several ids) numbered 7"},
		{"ack field of another kind", "", []string{"jobs.Jobs/Take", "jobs.Jobs/Get"}, "takes jobs.Job, which needs a bytes field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := tc.group
			if group == "" {
				group = "ack: method"
			}
			cfg, err := groupConfig(t, "jobs", group, tc.when...)
			if err != nil {
				t.Fatal(err)
			}
			err = app.Validate(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "routes[0].when[1].method") {
				t.Fatalf("Validate: %v, want %q at routes[0].when[1].method", err, tc.want)
			}
		})
	}
}

// TestGroupStreamPartitions: the records of every partition are shared
// among the callers, each delivered once, whoever acknowledges.
func TestGroupStreamPartitions(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	for _, name := range jobNames(30) {
		produceMsgs(t, prod, topic, name, nil, name)
	}
	a := startGroup(t, topic, "max_unacked_per_stream: 4")
	cc := dial(t, a)
	// Each caller reads on a goroutine of its own: a caller holding
	// records it has not read yet must not keep the others waiting.
	type recv struct {
		caller int
		b      []byte
		err    error
	}
	ch := make(chan recv)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var cancels []context.CancelFunc
	defer func() {
		close(done)
		for _, cancel := range cancels {
			cancel()
		}
		wg.Wait()
	}()
	for i := range 3 {
		c := take(t, cc)
		cancels = append(cancels, c.cancel)
		wg.Go(func() {
			for {
				var b []byte
				err := c.s.RecvMsg(&b)
				select {
				case ch <- recv{i, b, err}:
				case <-done:
					return
				}
				if err != nil {
					return
				}
			}
		})
	}
	got := map[string]int{}
	parts := map[int32]bool{}
	timeout := time.After(30 * time.Second)
	for len(got) < 30 {
		var r recv
		select {
		case r = <-ch:
		case <-timeout:
			t.Fatalf("%d of 30 records within 30s", len(got))
		}
		if r.err != nil {
			t.Fatalf("caller %d: %v", r.caller, r.err)
		}
		id, _ := fetch.IDFromMessage(r.b, 32767)
		p, _, err := fetch.ParseGroupID(id)
		if err != nil {
			t.Fatal(err)
		}
		got[unecho(r.b)]++
		parts[p] = true
		mustAck(t, cc, id)
	}
	for name, n := range got {
		if n != 1 {
			t.Errorf("%s delivered %d times", name, n)
		}
	}
	if len(parts) != 3 {
		t.Errorf("records came from partitions %v, want all 3", parts)
	}
}

// TestGroupStreamReload: a reload that keeps the route's settings keeps
// its group member: a record sent before is acknowledged after.
func TestGroupStreamReload(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(2)...)
	a := startGroup(t, topic, "ack_timeout: 1m, max_unacked_per_stream: 1")
	cc := dial(t, a)
	c := take(t, cc)
	j := c.next(t)
	next, err := groupConfig(t, topic, "ack_timeout: 1m, max_unacked_per_stream: 1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	mustAck(t, cc, j.id)
	if j := c.next(t); j.name != "job-1" {
		t.Fatalf("after the ack: %s, want job-1", j.name)
	}
}

// TestGroupStreamJSON: a group route over a topic holding JSON sends each
// record as the method's output type; a record that is not its JSON is
// not sent, goes to the dead-letter topic after max_deliveries, and the
// others are delivered.
func TestGroupStreamJSON(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0))
	ctx := context.Background()
	for _, v := range []string{`{"name":"job-0"}`, `{"name":5}`, `{"name":"job-2"}`} {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := groupConfig(t, topic, `max_deliveries: 2, dead_letter_topic: "{topic}.dead"`)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routes[0].Fetch.Format = config.FormatJSON
	a := startConfig(t, cfg)
	cc := dial(t, a)
	c := take(t, cc)
	for _, want := range []string{"job-0", "job-2"} {
		j := c.next(t)
		if j.name != want {
			t.Fatalf("got %s, want %s", j.name, want)
		}
		mustAck(t, cc, j.id)
	}
	recs := readTopic(t, topic+".dead", 1)
	if string(recs[0].Value) != `{"name":5}` {
		t.Fatalf("dead letter %q", recs[0].Value)
	}
}

// TestGroupStreamMetrics: group fetch routes' deliveries, redeliveries,
// acknowledgements, dead letters and members are in /metrics.
func TestGroupStreamMetrics(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 1, nil)
	produceMsgs(t, kit.Client(t, kgo.ProducerLinger(0)), topic, "k", nil, jobNames(2)...)
	cfg, err := groupConfig(t, topic, `ack_timeout: 200ms, max_deliveries: 2, dead_letter_topic: "{topic}.dead", max_unacked_per_stream: 1`)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listeners.Admin.Address = "127.0.0.1:0"
	a := startConfig(t, cfg)
	cc := dial(t, a)
	c := take(t, cc)
	c.next(t)
	c.next(t) // job-0 again, after its ack timeout
	mustAck(t, cc, c.next(t).id)
	readTopic(t, topic+".dead", 1)
	mfs := scrape(t, a)
	for name, want := range map[string]float64{
		"ferry_fetch_group_deliveries_total":   3,
		"ferry_fetch_group_redeliveries_total": 1,
		"ferry_fetch_group_acks_total":         1,
		"ferry_fetch_group_dead_letters_total": 1,
	} {
		if got, ok := sample(mfs, name, map[string]string{"cluster": "default"}); !ok || got != want {
			t.Errorf("%s{cluster=default} = %v (found %v), want %v", name, got, ok, want)
		}
	}
	if got, ok := sample(mfs, "ferry_fetch_group_members", nil); !ok || got != 1 {
		t.Errorf("ferry_fetch_group_members = %v (found %v), want 1", got, ok)
	}
}
