// Package testkit is the Kafka scaffolding Ferry's tests share: the brokers
// a test binary runs against, names unique to a test and run, topics,
// plain franz-go clients and a goroutine leak check that knows the shared
// broker's goroutines.
//
// Only tests import it; Ferry itself must not. (internal/kafka, which it
// builds on, cannot use it in its own package's tests.)
package testkit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ferryproxy/ferry/internal/kafka"
)

// brokersEnv names real brokers, comma-separated, for the tests to run
// against instead of an embedded one.
const brokersEnv = "FERRY_TEST_BROKERS"

// Real reports whether the tests run against the real brokers
// FERRY_TEST_BROKERS names rather than an embedded kfake one.
func Real() bool { return os.Getenv(brokersEnv) != "" }

// Broker is the Kafka a test binary runs against: the brokers
// FERRY_TEST_BROKERS names, else one embedded broker started on first use
// and shared by every test of the binary, as a real broker would be. A
// package's tests declare one:
//
//	var kit = testkit.NewBroker(3)
type Broker struct {
	partitions int

	once     sync.Once
	seeds    []string
	embedded *kafka.Embedded
	err      error
}

// NewBroker returns the test binary's Broker; its embedded broker, if it
// starts one, gives auto-created topics partitions partitions.
func NewBroker(partitions int) *Broker { return &Broker{partitions: partitions} }

// Seeds returns the broker addresses, starting the embedded broker on the
// first call when FERRY_TEST_BROKERS names none.
func (b *Broker) Seeds(t testing.TB) []string {
	t.Helper()
	b.once.Do(func() {
		if s := os.Getenv(brokersEnv); s != "" {
			for _, a := range strings.Split(s, ",") {
				if a = strings.TrimSpace(a); a != "" {
					b.seeds = append(b.seeds, a)
				}
			}
			return
		}
		e, err := kafka.StartEmbedded(0, b.partitions)
		if err != nil {
			b.err = fmt.Errorf("starting the embedded test broker: %w", err)
			return
		}
		b.embedded, b.seeds = e, e.Addrs()
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.seeds
}

// Close stops the embedded broker if one started; for a TestMain that
// checks for leaks after the tests.
func (b *Broker) Close() {
	if b.embedded != nil {
		b.embedded.Close(context.Background())
	}
}

// Client returns a plain franz-go client of the brokers with opts (which
// may override the seeds), closed when the test ends.
func (b *Broker) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Seeds(t)...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates topic with partitions, replication factor 1 and
// configs (nil: the broker's defaults), failing t if it cannot. It returns
// once every partition's offsets can be listed: a real broker answers
// UNKNOWN_TOPIC_OR_PARTITION for a moment after it created a topic, until
// its metadata caught up.
func (b *Broker) CreateTopic(t testing.TB, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	err := b.admin(t, func(ctx context.Context, adm *kadm.Client) error {
		resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return err
		}
		for {
			ends, err := adm.ListEndOffsets(ctx, topic)
			if err == nil {
				err = ends.Error()
			}
			if err == nil && len(ends[topic]) > 0 && (partitions <= 0 || len(ends[topic]) == int(partitions)) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("topic created, but its offsets cannot be listed: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	if err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

// Topic creates a topic named by Name(t, "topic") as CreateTopic does and
// returns its name. A benchmark's topic is deleted when the benchmark ends:
// benchmarks write far more than tests, and the embedded broker keeps
// every record in the test binary's own heap, where a finished benchmark's
// records would slow the next one's garbage collection.
func (b *Broker) Topic(t testing.TB, partitions int32, configs map[string]*string) string {
	t.Helper()
	topic := Name(t, "topic")
	b.CreateTopic(t, topic, partitions, configs)
	if _, ok := t.(*testing.B); ok {
		t.Cleanup(func() {
			err := b.admin(t, func(ctx context.Context, adm *kadm.Client) error {
				resp, err := adm.DeleteTopic(ctx, topic)
				if err == nil {
					err = resp.Err
				}
				return err
			})
			if err != nil {
				t.Errorf("deleting topic %s: %v", topic, err)
			}
		})
	}
	return topic
}

// admin runs f with an admin client of the brokers, closed after it, and a
// context that ends in 30 seconds.
func (b *Broker) admin(t testing.TB, f func(context.Context, *kadm.Client) error) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Seeds(t)...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f(ctx, kadm.NewClient(cl))
}

// CheckLeaks fails t if goroutines started during the test outlive it and
// its cleanups. Call it first, so that its check runs after every other
// cleanup, and not in parallel tests. It starts the shared broker first,
// which outlives every test.
func (b *Broker) CheckLeaks(t testing.TB) {
	t.Helper()
	b.Seeds(t)
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, LeakOptions()...)
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// LeakOptions are the goleak options that ignore the shared embedded
// broker's side of a connection a client closed: it ends on kfake's
// schedule and is not Ferry's.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read"),
		goleak.IgnoreAnyFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"),
	}
}

// maxNameLen is Kafka's limit on a topic name's length.
const maxNameLen = 249

// Name returns a topic or group name for what that no other test and no
// earlier run against the same real broker used: t's name and what,
// lowercased with every character but a-z and 0-9 made '-', and a random
// suffix.
func Name(t testing.TB, what string) string {
	test, what := sanitize(t.Name()), sanitize(what)
	const prefix = "ferry-test-"
	suffix := fmt.Sprintf("-%s-%08x", what, rand.Uint32())
	if room := maxNameLen - len(prefix) - len(suffix); len(test) > room {
		test = test[:max(room, 0)]
	}
	return prefix + test + suffix
}

// sanitize lowercases s and turns every character but a-z and 0-9 into '-'.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

// Context returns a context that ends after d or when the test's cleanups
// reach it.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
