package faults_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestFetchCatchUpBrokerKill: callers of a fetch route read a topic far
// larger than its cache from the earliest record and from old message
// ids, riding shared catch-up readers, while the broker is killed
// (SIGKILL) and started again on its data; records are written after it
// is back. Every caller gets every record from its position exactly once,
// in order per partition: a call the outage ends is resumed with its last
// message id, as a client would.
func TestFetchCatchUpBrokerKill(t *testing.T) {
	setup(t)
	if _, err := kafkaSH("start", true); err != nil {
		t.Fatal(err)
	}
	m := currentMode()
	const parts, perPart, more, pad = 3, 6000, 500, 100
	const fromStart, resumers = 12, 12
	dir := t.TempDir()
	topic := kit.Topic(t, parts, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	writeJobs(t, prod, topic, parts, 0, perPart, pad)
	writeFile(t, filepath.Join(dir, "jobs.proto"), testkit.JobsProto)
	admin := freePort(t)
	cfg := filepath.Join(dir, "ferry.yaml")
	// The cache holds some 1,000 of the 18,000 records, a catch-up reader
	// some 2,000: the callers ride catch-up readers most of the way.
	writeFile(t, cfg, fmt.Sprintf(`clusters: [{name: default, brokers: [%q]}]
listeners: {grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}, admin: {address: %q}}
log: {level: info}
protos: [{files: [jobs.proto], import_paths: [%q]}]
fetch: {cache: {max_bytes: 131072}, catch_up_window_bytes: 262144, max_catch_up_readers: 4, catch_up_wait: 2m}
routes:
  - name: jobs
    when: [{method: jobs.Jobs/Take}]
    fetch: {topic: %s}
`, suite.brokers, admin, dir, topic))
	_, addr := startProc(t, dir, "ferry", frontReady, nil, suite.bin, "serve", "-c", cfg)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(testkit.RawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	var callers []*fetchCaller
	for i := range fromStart + resumers {
		c := &fetchCaller{next: map[int32]int64{}, end: perPart + more}
		for p := range int32(parts) {
			c.next[p] = 0
		}
		if i >= fromStart {
			// An id from an earlier call: each partition at its own
			// position in the first third of the topic.
			k := int64(i-fromStart) * perPart / (3 * resumers)
			for p := range int32(parts) {
				c.next[p] = k + int64(p)*7
			}
			c.id = jobsID(c.next)
		}
		callers = append(callers, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(callers))
	for i, c := range callers {
		wg.Go(func() { errs[i] = c.run(ctx, cc) })
	}

	// Kill the broker once every caller is on its way and some ride a
	// catch-up reader (at once: callers reach the cache within seconds).
	var at map[string]float64
	waitUntil(t, 2*time.Minute, "a caller riding a catch-up reader, and every caller a record", func() bool {
		for _, c := range callers {
			if c.received() == 0 {
				return false
			}
		}
		at = scrape(t, admin, "ferry_fetch_")
		return at["ferry_fetch_catch_up_subscribers"] > 0
	})
	least, most := parts*(perPart+more), 0
	for _, c := range callers {
		least, most = min(least, c.received()), max(most, c.received())
	}
	t.Logf("killing the broker: callers have %d to %d records; %v", least, most, at)
	t0 := time.Now()
	if _, err := kafkaSH("kill", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(m.brokerDown)
	if _, err := kafkaSH("start", true); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker back after %s", time.Since(t0).Round(time.Millisecond))
	writeJobs(t, prod, topic, parts, perPart, perPart+more, pad)

	wg.Wait()
	resumes := 0
	for i, c := range callers {
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		resumes += c.resumes
	}
	t.Logf("%d callers got every record from their position once, in order; %d calls resumed by message id", len(callers), resumes)
}

// fetchCaller reads jobs.Jobs/Take until it has every partition's records
// up to end, checking that each comes once, in order; a call that ends
// early is started again from the last message id.
type fetchCaller struct {
	end int64

	mu      sync.Mutex
	next    map[int32]int64 // the offset each partition's next record must have
	id      []byte          // the last message id, nil for none
	got     int
	resumes int
}

func (c *fetchCaller) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

func (c *fetchCaller) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.next {
		if o < c.end {
			return false
		}
	}
	return true
}

func (c *fetchCaller) run(ctx context.Context, cc *grpc.ClientConn) error {
	for !c.done() {
		err := c.call(ctx, cc)
		if ctx.Err() != nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			return fmt.Errorf("at %v after %d records: %w (last call: %v)", c.next, c.got, ctx.Err(), err)
		}
		if errors.Is(err, errBadStream) {
			return err // a gap, a duplicate or a message not a job: no retry mends it
		}
		if !c.done() {
			c.mu.Lock()
			c.resumes++
			c.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// call reads one call, from c.id if set, until c is done or the call
// ends. A caller reads no faster than some 4,000 records a second, so
// that the callers are still catching up when the broker goes.
func (c *fetchCaller) call(ctx context.Context, cc *grpc.ClientConn) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	if c.id != nil {
		cctx = metadata.AppendToOutgoingContext(cctx, "last-message-id", fetch.EncodeIDText(c.id))
	}
	c.mu.Unlock()
	s, err := openTake(cctx, cc)
	if err != nil {
		return err
	}
	for n := 0; !c.done(); n++ {
		name, id, err := recvJob(s)
		if err != nil {
			return err
		}
		var p int32
		var off int64
		if _, err := fmt.Sscanf(name, "p%d-%06d", &p, &off); err != nil {
			return fmt.Errorf("%w: job %q: %v", errBadStream, name, err)
		}
		c.mu.Lock()
		want, ok := c.next[p]
		if ok && off == want {
			c.next[p], c.id = off+1, id
			c.got++
		}
		next := fmt.Sprint(c.next)
		c.mu.Unlock()
		if !ok || off != want {
			return fmt.Errorf("%w: partition %d: record %d, want %d (at %s)", errBadStream, p, off, want, next)
		}
		if n%4 == 3 {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// writeJobs writes Jobs named p<partition>-<offset> for offsets [from, to)
// of every partition of a topic written by nothing else, padded to about
// pad bytes.
func writeJobs(t *testing.T, prod *kgo.Client, topic string, parts int32, from, to int64, pad int) {
	t.Helper()
	var recs []*kgo.Record
	for off := from; off < to; off++ {
		for p := range parts {
			name := fmt.Sprintf("p%d-%06d|%s", p, off, strings.Repeat("x", pad))
			v := protowire.AppendTag(nil, 1, protowire.BytesType)
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: protowire.AppendString(v, name)})
		}
		if len(recs) >= 3000 || off == to-1 {
			if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// jobsID is the message id of a caller whose next record of each
// partition is at the offset next names (a version byte, then the count
// and each partition and offset, zigzag varints).
func jobsID(next map[int32]int64) []byte {
	b := []byte{1}
	b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(len(next))))
	for p := range int32(len(next)) {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(p)))
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(next[p]))
	}
	return b
}

// freePort returns a loopback address no one listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape returns the unlabelled metrics named with prefix on the admin
// listener.
func scrape(t *testing.T, admin, prefix string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, prefix) || strings.Contains(name, "{") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		out[name] = f
	}
	return out
}

// waitUntil waits up to d for cond.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
	}
}
