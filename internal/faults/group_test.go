package faults_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// jobTally counts, per job, deliveries and acknowledgements the workers
// saw succeed.
type jobTally struct {
	mu        sync.Mutex
	delivered map[string]int
	acked     map[string]bool
}

func (j *jobTally) deliver(name string) {
	j.mu.Lock()
	j.delivered[name]++
	j.mu.Unlock()
}

func (j *jobTally) ack(name string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.acked[name] = true
	return len(j.acked)
}

func (j *jobTally) counts() (acked, deliveries int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, n := range j.delivered {
		deliveries += n
	}
	return len(j.acked), deliveries
}

// TestGroupStreamKill: workers take jobs from a group fetch route and
// acknowledge each, while the only Ferry instance is killed (SIGKILL) and
// started again. Every job must be acknowledged (none lost): the ones
// delivered and not acknowledged, and the ones acknowledged but not yet
// committed when Ferry died, are delivered again after the restart.
func TestGroupStreamKill(t *testing.T) {
	setup(t)
	if _, err := kafkaSH("start", true); err != nil {
		t.Fatal(err)
	}
	const n, killAt, workers = 3000, 1000, 2
	dir := t.TempDir()
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t)
	var recs []*kgo.Record
	for i := range n {
		v := protowire.AppendTag(nil, 1, protowire.BytesType)
		recs = append(recs, &kgo.Record{Topic: topic, Value: protowire.AppendString(v, fmt.Sprintf("job-%05d", i))})
	}
	if err := prod.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "jobs.proto"), testkit.JobsProto)
	cfg := filepath.Join(dir, "ferry.yaml")
	writeFile(t, cfg, fmt.Sprintf(`clusters: [{name: default, brokers: [%q]}]
listeners: {grpc: {address: "127.0.0.1:0", shutdown_timeout: 2s}, admin: {address: ""}}
log: {level: info}
protos: [{files: [jobs.proto], import_paths: [%q]}]
kafka_api: {consume: {commit_interval: 100ms, session_timeout: %s}}
routes:
  - name: jobs
    when: [{method: jobs.Jobs/Take}, {method: jobs.Jobs/Ack}]
    fetch: {topic: %s, group: {id: %s, ack: method, max_unacked_per_stream: 20}}
`, suite.brokers, dir, sessionTimeout, topic, testkit.Name(t, "workers")))
	p, addr := startProc(t, dir, "ferry", frontReady, nil, suite.bin, "serve", "-c", cfg)
	var target atomic.Pointer[string]
	target.Store(&addr)

	tally := &jobTally{delivered: map[string]int{}, acked: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reached := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				// Each round is one connection to the instance running
				// now; a killed instance ends it.
				if err := work(ctx, *target.Load(), tally, func(acked int) {
					if acked >= killAt {
						once.Do(func() { close(reached) })
					}
				}); err != nil && ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	select {
	case <-reached:
	case <-time.After(2 * time.Minute):
		a, d := tally.counts()
		t.Fatalf("%d of %d jobs acknowledged (%d deliveries) in 2 minutes", a, killAt, d)
	}
	a, d := tally.counts()
	t.Logf("killing Ferry: %d jobs acknowledged, %d deliveries", a, d)
	p.kill()
	time.Sleep(time.Second)
	addr = p.start()
	target.Store(&addr)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		a, d = tally.counts()
		if a == n {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			wg.Wait()
			t.Fatalf("after the restart: %d of %d jobs acknowledged (%d deliveries): the others are lost", a, n, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	a, d = tally.counts()
	t.Logf("every one of %d jobs acknowledged; %d deliveries, %d of them again after the kill", a, d, d-n)
	if d < n {
		t.Errorf("%d deliveries of %d jobs", d, n)
	}
}

// work takes jobs on one Take call at addr and acknowledges each on its
// own, until the call or ctx ends; acked is called with the number of
// jobs acknowledged so far.
func work(ctx context.Context, addr string, tally *jobTally, acked func(int)) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(testkit.RawCodec{})))
	if err != nil {
		return err
	}
	defer cc.Close()
	s, err := openTake(ctx, cc)
	if err != nil {
		return err
	}
	for {
		name, id, err := recvJob(s)
		if err != nil {
			return err
		}
		tally.deliver(name)
		req := protowire.AppendTag(nil, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, id)
		var resp []byte
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = cc.Invoke(actx, "/jobs.Jobs/Ack", &req, &resp)
		cancel()
		if err != nil {
			return err
		}
		acked(tally.ack(name))
	}
}

// openTake starts a jobs.Jobs/Take call on cc.
func openTake(ctx context.Context, cc *grpc.ClientConn) (grpc.ClientStream, error) {
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/jobs.Jobs/Take")
	if err != nil {
		return nil, err
	}
	empty := []byte{}
	if err := s.SendMsg(&empty); err != nil {
		return nil, err
	}
	return s, s.CloseSend()
}

// errBadStream is a call's stream that resuming cannot mend: a record out
// of order (a gap or a duplicate), or one that is not what was written.
var errBadStream = errors.New("bad stream")

// recvJob receives a Job on s and returns its name and message id; a
// message that is not a Job is errBadStream.
func recvJob(s grpc.ClientStream) (name string, id []byte, err error) {
	var b []byte
	if err := s.RecvMsg(&b); err != nil {
		return "", nil, err
	}
	if name, id, err = parseJob(b); err != nil {
		err = fmt.Errorf("%w: %v", errBadStream, err)
	}
	return name, id, err
}

// parseJob returns a Job's name and message id.
func parseJob(b []byte) (name string, id []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", nil, fmt.Errorf("job %x: not a Job", b)
		}
		b = b[n:]
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return "", nil, fmt.Errorf("job %x: not a Job", b)
		}
		b = b[m:]
		switch num {
		case 1:
			name = string(v)
		case 32767:
			id = v
		}
	}
	if name == "" || id == nil {
		return "", nil, fmt.Errorf("a job without a name or message id")
	}
	return name, id, nil
}
