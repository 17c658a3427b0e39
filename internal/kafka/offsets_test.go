package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/testkit"
)

var kit = testkit.NewBroker(2)

func newCluster(t *testing.T) *kafka.Cluster {
	t.Helper()
	c := kafka.NewCluster(config.Cluster{Name: "test", ClientID: "ferry-test", DialTimeout: 10 * time.Second,
		Producer: config.Producer{MaxBufferedRecords: 1000, Compression: "none", DeliveryTimeout: 30 * time.Second}},
		kit.Seeds(t), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestListOffsets: every Position lists what it names on every partition,
// an empty partition included; a time after a partition's last record
// lists its end; an unknown topic is UNKNOWN_TOPIC_OR_PARTITION (NOT_FOUND
// once wrapped); Watermarks pairs the start and the end.
func TestListOffsets(t *testing.T) {
	kit.CheckLeaks(t)
	c := newCluster(t)
	ctx := testkit.Context(t, time.Minute)
	topic := kit.Topic(t, 2, nil)

	// Partition 0 gets three records a second apart; partition 1 none.
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	cl := kit.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range 3 {
		r := &kgo.Record{Topic: topic, Partition: 0, Value: []byte{byte(i)}, Timestamp: t0.Add(time.Duration(i) * time.Second)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		at   kafka.Position
		want string
	}{
		{kafka.AtStart(), "map[0:0 1:0]"},
		{kafka.AtEnd(), "map[0:3 1:0]"},
		{kafka.AtOrAfter(t0.Add(-time.Minute)), "map[0:0 1:0]"},
		{kafka.AtOrAfter(t0), "map[0:0 1:0]"},
		{kafka.AtOrAfter(t0.Add(time.Millisecond)), "map[0:1 1:0]"},
		{kafka.AtOrAfter(t0.Add(2 * time.Second)), "map[0:2 1:0]"},
		{kafka.AtOrAfter(t0.Add(time.Minute)), "map[0:3 1:0]"},
		{kafka.AtOrAfter(time.Now().Add(time.Hour)), "map[0:3 1:0]"},
	} {
		got, err := c.ListOffsets(ctx, topic, tc.at)
		if err != nil {
			t.Fatalf("%v: %v", tc.at, err)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%v: %v, want %s", tc.at, got, tc.want)
		}
		// A client of the caller's own lists the same.
		got, err = kafka.ListOffsetsWith(ctx, cl, topic, tc.at)
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("%v through a client of its own: %v %v, want %s", tc.at, got, err, tc.want)
		}
	}

	marks, err := c.Watermarks(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int32]kafka.Watermark{0: {Start: 0, End: 3}, 1: {Start: 0, End: 0}}; fmt.Sprint(marks) != fmt.Sprint(want) {
		t.Errorf("Watermarks: %v, want %v", marks, want)
	}

	missing := testkit.Name(t, "missing")
	for _, at := range []kafka.Position{kafka.AtStart(), kafka.AtEnd(), kafka.AtOrAfter(t0)} {
		_, err := c.ListOffsets(ctx, missing, at)
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("%v of a topic that does not exist: %v, want UNKNOWN_TOPIC_OR_PARTITION", at, err)
		}
		if code := kafka.Code(kafka.Wrap("listing", err)); code != codes.NotFound {
			t.Errorf("%v of a topic that does not exist: %v, want NOT_FOUND", at, code)
		}
	}
	if _, err := c.Watermarks(ctx, missing); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Errorf("Watermarks of a topic that does not exist: %v", err)
	}

	// The admin client is shared, and closed with the cluster.
	a1, err := c.Admin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.ListTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	if _, err := c.Admin(); err == nil {
		t.Error("Admin after Close: no error")
	}
	if _, err := c.ListOffsets(ctx, topic, kafka.AtEnd()); err == nil {
		t.Error("ListOffsets after Close: no error")
	}
}

// TestPositionString: a Position says which offset it names.
func TestPositionString(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		p    kafka.Position
		want string
	}{
		{kafka.AtStart(), "start"},
		{kafka.AtEnd(), "end"},
		{kafka.AtOrAfter(at), "at or after 2024-05-01T12:00:00Z"},
		{kafka.AtOrAfter(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)), "at or after 1970-01-01T00:00:00Z"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}

// TestProducerShared: callers racing for a producer share the one
// created; Close closes it, and a producer asked for after Close is an
// error.
func TestProducerShared(t *testing.T) {
	kit.CheckLeaks(t)
	c := newCluster(t)
	var wg sync.WaitGroup
	got := make([]*kgo.Client, 16)
	for i := range got {
		wg.Go(func() {
			p, err := c.Producer(kafka.AcksLeaderOnly)
			if err != nil {
				t.Error(err)
			}
			got[i] = p
		})
	}
	wg.Wait()
	for _, p := range got[1:] {
		if p != got[0] {
			t.Fatal("callers got different producers for one acks mode")
		}
	}
	other, err := c.Producer(kafka.AcksInSyncReplicas)
	if err != nil || other == got[0] {
		t.Fatalf("another acks mode: %p %v, want a producer of its own", other, err)
	}
	ctx := testkit.Context(t, time.Minute)
	topic := kit.Topic(t, 1, nil)
	if err := other.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Producer(kafka.AcksLeaderOnly); err == nil {
		t.Error("Producer after Close: no error")
	}
	if err := other.ProduceSync(context.Background(), &kgo.Record{Topic: topic}).FirstErr(); !errors.Is(err, kgo.ErrClientClosed) {
		t.Errorf("producing after Close: %v, want the producer closed", err)
	}
}

// BenchmarkProducer measures the per-record producer lookup:
//
//	go test -run '^$' -bench BenchmarkProducer ./internal/kafka
func BenchmarkProducer(b *testing.B) {
	c := kafka.NewCluster(config.Cluster{Name: "bench", DialTimeout: time.Second,
		Producer: config.Producer{MaxBufferedRecords: 1000, Compression: "none", DeliveryTimeout: time.Second}},
		[]string{"127.0.0.1:1"}, slog.New(slog.DiscardHandler))
	defer c.Close(context.Background())
	if _, err := c.Producer(kafka.AcksLeaderOnly); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Producer(kafka.AcksLeaderOnly); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
