package app_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/fetch"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestWorkQueueExample starts examples/workqueue: jobs submitted through
// Submit are split between two Take callers, each job to one of them, and
// acknowledged through Ack; a job whose caller leaves without
// acknowledging it goes to the other caller.
func TestWorkQueueExample(t *testing.T) {
	kit.CheckLeaks(t)
	cfg := loadExample(t, "workqueue")
	if testkit.Real() {
		// Topics and a group of this run's own.
		topic := kit.Topic(t, 2, nil)
		dead := topic + "-dead"
		cfg.Routes[0].Produce.Topic = topic
		cfg.Routes[1].Fetch.Topic = topic
		cfg.Routes[1].Fetch.Group.ID = testkit.Name(t, "workers")
		cfg.Routes[1].Fetch.Group.DeadLetterTopic = &dead
	}
	a := startConfig(t, cfg)
	cc := dial(t, a)
	const (
		submit = "/example.jobs.Jobs/Submit"
		take   = "/example.jobs.Jobs/Take"
		ack    = "/example.jobs.Jobs/Ack"
	)
	call := func(method string, req []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var resp []byte
		return cc.Invoke(ctx, method, &req, &resp)
	}
	submitJob := func(name string) {
		t.Helper()
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		if err := call(submit, protowire.AppendString(b, name)); err != nil {
			t.Fatalf("Submit %s: %v", name, err)
		}
	}
	// The first job makes the topic (the embedded broker creates it);
	// the callers join once it is there.
	submitJob("job-0")
	type got struct {
		worker int
		name   string
		id     []byte
	}
	jobs := make(chan got, 16)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	workers := make([]context.CancelFunc, 2)
	for w := range workers {
		wctx, stop := context.WithCancel(ctx)
		workers[w] = stop
		s, err := cc.NewStream(wctx, &grpc.StreamDesc{ServerStreams: true}, take)
		if err != nil {
			t.Fatal(err)
		}
		empty := []byte{}
		if err := s.SendMsg(&empty); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				var b []byte
				if err := s.RecvMsg(&b); err != nil {
					return
				}
				id, _ := fetch.IDFromMessage(b, 32767)
				jobs <- got{worker: w, name: unecho(b), id: id}
			}
		}()
	}
	next := func() got {
		t.Helper()
		select {
		case j := <-jobs:
			return j
		case <-time.After(20 * time.Second):
			t.Fatal("no job within 20 s")
			return got{}
		}
	}
	for i := 1; i < 6; i++ {
		submitJob(fmt.Sprintf("job-%d", i))
	}
	var names []string
	for range 6 {
		j := next()
		names = append(names, j.name)
		if id := base64.StdEncoding.EncodeToString(j.id); j.name == "job-0" && !testkit.Real() && id != "AgAA" {
			t.Errorf("the first job's message id is %s: the README shows grpcurl printing AgAA, and acknowledges with it", id)
		}
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		if err := call(ack, protowire.AppendBytes(b, j.id)); err != nil {
			t.Fatalf("Ack %s: %v", j.name, err)
		}
	}
	slices.Sort(names)
	if want := jobNames(6); !slices.Equal(names, want) {
		t.Fatalf("jobs %q, want each of %q once", names, want)
	}

	// A job its caller does not acknowledge goes to the other caller
	// once the first one leaves.
	submitJob("job-left")
	first := next()
	if first.name != "job-left" {
		t.Fatalf("got %q, want job-left", first.name)
	}
	workers[first.worker]()
	again := next()
	if again.name != "job-left" || again.worker == first.worker {
		t.Fatalf("after worker %d left: worker %d got %q, want job-left on the other worker", first.worker, again.worker, again.name)
	}
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	if err := call(ack, protowire.AppendBytes(b, again.id)); err != nil {
		t.Fatalf("Ack job-left: %v", err)
	}
	workers[again.worker]()
}
