package app_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/app"
	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestEmbeddedDataDir: with embedded.data_dir, a Ferry started again on
// the same directory finds the topics, records and committed offsets of
// the last one.
func TestEmbeddedDataDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ferry.yaml")
	y := `
clusters: [{name: default}]
embedded: {port: 0, partitions: 2, data_dir: kafka-data}
listeners: {grpc: {address: 127.0.0.1:0}, http: {address: ""}}
kafka_api: {enabled: true}
log: {level: warn}
`
	cfg, err := config.Parse(file, []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "kafka-data"); cfg.Embedded.DataDir != want {
		t.Fatalf("embedded.data_dir is %q, want %q (relative to the file's directory)", cfg.Embedded.DataDir, want)
	}
	const topic, group, n = "durable", "durable-group", 20

	var logs bytes.Buffer
	a := startDurable(t, cfg, &logs)
	if want := "keeps data in " + cfg.Embedded.DataDir; !strings.Contains(logs.String(), want) {
		t.Errorf("start-up log does not say %q:\n%s", want, logs.String())
	}
	cl := durableClient(t, a)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(context.Background(), 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%4), Value: fmt.Appendf(nil, "v%d", i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	offs := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) { offs.AddOffset(topic, o.Partition, o.Offset-1, -1) })
	if err := adm.CommitAllOffsets(context.Background(), group, offs); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	closeCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	a.Close(closeCtx)
	cancel()
	if _, err := os.Stat(cfg.Embedded.DataDir); err != nil {
		t.Fatalf("no data directory after stopping: %v", err)
	}

	a = startDurable(t, cfg, &bytes.Buffer{})
	cl = durableClient(t, a, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	adm = kadm.NewClient(cl)
	got := map[string]bool{}
	ctx := testkit.Context(t, 20*time.Second)
	for len(got) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[string(r.Value)] = true })
	}
	if len(got) != n {
		t.Fatalf("read %d of the %d records back after a restart", len(got), n)
	}
	committed, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	var sum, want int64
	committed.Each(func(o kadm.OffsetResponse) { sum += o.At })
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset - 1 })
	if sum != want {
		t.Errorf("group %s has offsets summing to %d after a restart, want %d", group, sum, want)
	}
	topics, err := adm.ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := topics[topic]; !ok || len(d.Partitions) != 2 {
		t.Errorf("topic %s after a restart: %+v", topic, topics[topic])
	}
}

// startDurable starts Ferry with cfg, logging to w as well as to the test.
func startDurable(t *testing.T, cfg *config.Config, w *bytes.Buffer) *app.App {
	t.Helper()
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})
	return startLogged(t, cfg, slog.New(h))
}

// durableClient is a client of the embedded broker of a.
func durableClient(t *testing.T, a *app.App, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(a.KafkaAddrs("default")...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
