package app_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/fetch"
)

// BenchmarkFetchScale is a reconnect storm on one fetch route: a topic of
// FERRY_SCALE_RECORDS (20,000) records of 100 bytes on 3 partitions, and
// FERRY_SCALE_SUBSCRIBERS (2,000) callers subscribing at once from the
// earliest record; each of them, at a record of its own, hands its message
// id to a second caller that subscribes with it (2,000 more, resuming with
// ids that are older the further the first ones got). Ferry runs as a
// process of its own (on the test brokers: the embedded one, or
// FERRY_TEST_BROKERS), so that its memory, file descriptors and Kafka
// connections are its own; a sampler reads them from /proc every 100 ms.
//
// Every caller must get every record from its position exactly once (the
// run fails otherwise). It reports the slowest and the 99th percentile
// first message after subscribing, the time until every caller had every
// record, and the peaks of Ferry's resident memory, open file descriptors
// and connections to the brokers.
//
// FERRY_SCALE_GOMEMLIMIT=300MiB runs Ferry with that GOMEMLIMIT.
// FERRY_SCALE_CACHE=1048576 sets fetch.cache.max_bytes, so that the topic
// does not fit in its cache and the callers ride catch-up readers.
// FERRY_SCALE_ADMIN=127.0.0.1:7159 serves Ferry's admin listener there,
// with /debug/pprof/, to profile it during the run.
//
// Run: go test ./internal/app -run '^$' -bench FetchScale -benchtime 1x -timeout 30m
func BenchmarkFetchScale(b *testing.B) {
	subs := envInt(b, "FERRY_SCALE_SUBSCRIBERS", 2000)
	records := envInt(b, "FERRY_SCALE_RECORDS", 20000)
	bin := buildFerry(b)
	topic := kit.Topic(b, 3, nil)
	prod := kit.Client(b, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	// Record i is on partition i%3 and holds i in its first 8 bytes, padded
	// to a 100-byte value.
	for start := 0; start < records; start += 1000 {
		var batch []*kgo.Record
		for i := start; i < min(start+1000, records); i++ {
			text := make([]byte, 98)
			binary.BigEndian.PutUint64(text, uint64(i))
			batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: echo(string(text))})
		}
		if err := prod.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
			b.Fatal(err)
		}
	}
	fetchCfg := ""
	if c := os.Getenv("FERRY_SCALE_CACHE"); c != "" {
		fetchCfg = "fetch: {cache: {max_bytes: " + c + "}}\n"
	}
	fixedAdmin := os.Getenv("FERRY_SCALE_ADMIN")
	dir := b.TempDir()
	// launch runs Ferry on free ports, and reports false when it exited
	// before it listened: another process took a port between freeAddr
	// and Ferry's listen (packages run in parallel).
	var cmd *exec.Cmd
	var addr, adminAddr string
	launch := func() bool {
		addr, adminAddr = freeAddr(b), fixedAdmin
		if adminAddr == "" {
			adminAddr = freeAddr(b)
		}
		admin := fmt.Sprintf("{address: %q, pprof: %t}", adminAddr, fixedAdmin != "")
		cfg := filepath.Join(dir, "ferry.yaml")
		writeFile(b, cfg, fmt.Sprintf(`clusters: [{name: default%s}]
listeners: {grpc: {address: %q}, admin: %s}
protos: [{files: [fanout.proto], import_paths: [%q]}]
log: {level: warn}
%sroutes:
%s`, kit.ClusterYAML(b), addr, admin, filepath.Join(root(b), "examples", "fanout"), fetchCfg, fetchRoute(topic, "      start: earliest\n")))
		cmd = exec.Command(bin, "serve", "-c", cfg)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if l := os.Getenv("FERRY_SCALE_GOMEMLIMIT"); l != "" {
			// Go's soft memory limit for Ferry alone.
			cmd.Env = append(os.Environ(), "GOMEMLIMIT="+l)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			_, _ = cmd.Process.Wait()
			close(exited)
		}()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return true
			}
			select {
			case <-exited:
				return false
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				b.Fatalf("nothing listens on %s after 60 s", addr)
			}
		}
	}
	for try := 1; !launch(); try++ {
		if try == 3 {
			b.Fatal("ferry exited before it listened, three times")
		}
	}
	defer func() { _ = cmd.Process.Kill() }()
	pid := cmd.Process.Pid
	brokerPorts := map[uint16]bool{}
	for _, s := range kit.Seeds(b) {
		_, port, _ := net.SplitHostPort(s)
		p, _ := strconv.Atoi(port)
		brokerPorts[uint16(p)] = true
	}
	base := sampleProcess(pid, brokerPorts)

	// As many clients would: up to 500 streams per connection.
	conns := make([]*grpc.ClientConn, max(8, (2*subs+499)/500))
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	var peak procSample
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			peak = peak.max(sampleProcess(pid, brokerPorts))
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	})

	firsts := make([]time.Duration, 2*subs)
	var done, failed atomic.Int64
	var errOnce sync.Once
	var firstErr error
	fail := func(err error) {
		failed.Add(1)
		errOnce.Do(func() { firstErr = err })
	}
	// subscribe streams records to caller n until it has want of them,
	// none twice and none in skip; at record handAt (when not -1) it
	// passes the message id and what it got so far to hand.
	subscribe := func(n int, md metadata.MD, want int, skip []byte, handAt int, hand func(id []byte, got []byte)) {
		t0 := time.Now()
		sctx, scancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
		defer scancel()
		s, err := conns[n%len(conns)].NewStream(sctx, &grpc.StreamDesc{ServerStreams: true}, fanoutMethod)
		if err != nil {
			fail(err)
			return
		}
		empty := []byte{}
		if err := s.SendMsg(&empty); err != nil {
			fail(err)
			return
		}
		s.CloseSend()
		got := make([]byte, (records+7)/8)
		for k := 0; k < want; k++ {
			var m []byte
			if err := s.RecvMsg(&m); err != nil {
				fail(fmt.Errorf("caller %d after %d of %d records: %w", n, k, want, err))
				return
			}
			if k == 0 {
				firsts[n] = time.Since(t0)
			}
			i := int(binary.BigEndian.Uint64([]byte(unecho(m))))
			if i >= records || got[i/8]&(1<<(i%8)) != 0 || skip != nil && skip[i/8]&(1<<(i%8)) != 0 {
				fail(fmt.Errorf("caller %d got record %d twice", n, i))
				return
			}
			got[i/8] |= 1 << (i % 8)
			if k == handAt {
				id, ok := fetch.IDFromMessage(m, 32767)
				if !ok {
					fail(fmt.Errorf("caller %d: record %d has no message id", n, i))
					return
				}
				hand(id, slices.Clone(got))
			}
		}
		done.Add(1)
	}
	var callers sync.WaitGroup
	start := time.Now()
	for n := range subs {
		// Resume after record handAt of this caller's stream.
		handAt := (n * 7919) % (records - 1)
		callers.Go(func() {
			subscribe(n, nil, records, nil, handAt, func(id, got []byte) {
				md := metadata.Pairs("last-message-id", fetch.EncodeIDText(id))
				callers.Go(func() { subscribe(subs+n, md, records-handAt-1, got, -1, nil) })
			})
		})
	}
	callers.Wait()
	elapsed := time.Since(start)
	close(stopSampling)
	sampling.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d callers failed; the first: %v (peaks: %d MB resident, %d fds, %d Kafka connections; %s)",
			f, 2*subs, firstErr, peak.rss>>20, peak.fds, peak.kafka, elapsed.Round(time.Millisecond))
	}
	fromStart, resumed := slices.Clone(firsts[:subs]), slices.Clone(firsts[subs:])
	slices.Sort(firsts)
	slices.Sort(fromStart)
	slices.Sort(resumed)
	b.ReportMetric(float64(firsts[len(firsts)-1].Milliseconds()), "first-max-ms")
	b.ReportMetric(float64(firsts[len(firsts)*99/100].Milliseconds()), "first-p99-ms")
	b.ReportMetric(float64(fromStart[subs-1].Milliseconds()), "first-max-earliest-ms")
	b.ReportMetric(float64(resumed[subs-1].Milliseconds()), "first-max-resumed-ms")
	b.ReportMetric(elapsed.Seconds(), "s-all-delivered")
	b.ReportMetric(float64(peak.rss)/(1<<20), "rss-peak-MB")
	b.ReportMetric(float64(peak.fds), "fds-peak")
	b.ReportMetric(float64(peak.kafka), "kafka-conns-peak")
	b.ReportMetric(float64(base.kafka), "kafka-conns-idle")
	b.ReportMetric(float64(done.Load()), "callers-complete")
	// What Ferry's fetch routes did, from its metrics.
	for name, unit := range map[string]string{
		"ferry_fetch_catch_up_readers_started_total": "catch-up-readers-started",
		"ferry_fetch_backfills_total":                "backfills",
		"ferry_fetch_cut_offs_total":                 "cut-offs",
	} {
		v, err := scrapeMetric("http://"+adminAddr+"/metrics", name)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(v, unit)
	}
}

// scrapeMetric returns the value of an unlabelled metric at url.
func scrapeMetric(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", url, name)
}

// procSample is what sampleProcess reads of a process.
type procSample struct {
	rss   int64 // bytes
	fds   int
	kafka int // established connections to the brokers
}

func (a procSample) max(b procSample) procSample {
	return procSample{max(a.rss, b.rss), max(a.fds, b.fds), max(a.kafka, b.kafka)}
}

// sampleProcess reads pid's resident memory, its open file descriptors,
// and how many of its sockets are connected to one of ports.
func sampleProcess(pid int, ports map[uint16]bool) procSample {
	var s procSample
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				s.rss = kb << 10
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	s.fds = len(ents)
	inodes := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// sl local rem st ... uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "01" || !inodes[fs[9]] {
				continue
			}
			_, port, ok := strings.Cut(fs[2], ":")
			p, err := strconv.ParseUint(port, 16, 16)
			if ok && err == nil && ports[uint16(p)] {
				s.kafka++
			}
		}
		fh.Close()
	}
	return s
}
