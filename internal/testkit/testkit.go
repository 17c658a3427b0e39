// Package testkit is the Kafka scaffolding Ferry's tests share: the brokers
// a test binary runs against, names unique to a test and run, topics,
// plain franz-go clients and a goroutine leak check that knows the shared
// broker's goroutines.
//
// The real brokers may require TLS, client certificates and SASL: the
// FERRY_TEST_KAFKA_* variables (see Broker.Security) say how to reach
// them, and every client and cluster configuration the tests make of the
// brokers goes through Opts, Client, ClusterYAML or Security.
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
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
)

// brokersEnv names real brokers, comma-separated, for the tests to run
// against instead of an embedded one.
const brokersEnv = "FERRY_TEST_BROKERS"

// Real reports whether the tests run against the real brokers
// FERRY_TEST_BROKERS names rather than an embedded kfake one.
func Real() bool { return os.Getenv(brokersEnv) != "" }

// The variables that say how to reach FERRY_TEST_BROKERS when they require
// TLS or SASL.
const (
	tlsCAEnv   = "FERRY_TEST_KAFKA_TLS_CA"   // PEM file of the brokers' CA; turns TLS on
	tlsCertEnv = "FERRY_TEST_KAFKA_TLS_CERT" // client certificate (mTLS); turns TLS on
	tlsKeyEnv  = "FERRY_TEST_KAFKA_TLS_KEY"  // its key
	saslEnv    = "FERRY_TEST_KAFKA_SASL"     // MECHANISM:user:password
)

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
	tls      config.ClientTLS
	sasl     config.ClusterSASL
	security []kgo.Opt // the franz-go options of tls and sasl
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
			b.err = b.readSecurity()
			return
		}
		for _, env := range []string{tlsCAEnv, tlsCertEnv, tlsKeyEnv, saslEnv} {
			if os.Getenv(env) != "" {
				b.err = fmt.Errorf("%s needs %s: the embedded test broker speaks plaintext without SASL", env, brokersEnv)
				return
			}
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

// readSecurity reads the FERRY_TEST_KAFKA_* variables.
func (b *Broker) readSecurity() error {
	ca, cert, key := os.Getenv(tlsCAEnv), os.Getenv(tlsCertEnv), os.Getenv(tlsKeyEnv)
	if ca != "" || cert != "" || key != "" {
		b.tls = config.ClientTLS{Enabled: true, CAFile: ca, CertFile: cert, KeyFile: key}
	}
	if s := os.Getenv(saslEnv); s != "" {
		parts := strings.SplitN(s, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("%s must be MECHANISM:user:password, such as SCRAM-SHA-512:ferry:ferry-secret", saslEnv)
		}
		b.sasl = config.ClusterSASL{Mechanism: parts[0], Username: parts[1], Password: parts[2]}
	}
	opts, err := kafka.SecurityOpts(config.Cluster{TLS: b.tls, SASL: b.sasl})
	if err != nil {
		return fmt.Errorf("the %s, %s, %s and %s variables: %w", tlsCAEnv, tlsCertEnv, tlsKeyEnv, saslEnv, err)
	}
	b.security = opts
	return nil
}

// Secured reports whether the tests reach the brokers over TLS or SASL,
// which tests that need plaintext (such as one that relays the broker's
// bytes) skip under.
func (b *Broker) Secured(t testing.TB) bool {
	t.Helper()
	b.Seeds(t)
	return b.tls.Enabled || b.sasl.Mechanism != ""
}

// Security returns the tls and sasl sections of a cluster of the brokers,
// empty for plaintext brokers.
func (b *Broker) Security(t testing.TB) (config.ClientTLS, config.ClusterSASL) {
	t.Helper()
	b.Seeds(t)
	return b.tls, b.sasl
}

// Opts returns the options of a plain franz-go client of the brokers: the
// seeds, and the TLS and SASL options they need.
func (b *Broker) Opts(t testing.TB) []kgo.Opt {
	t.Helper()
	return append([]kgo.Opt{kgo.SeedBrokers(b.Seeds(t)...)}, b.security...)
}

// ClusterYAML returns the keys of a cluster of the brokers in a Ferry
// configuration beside name: brokers, tls and sasl, each a flow mapping
// entry after a comma, so that a test writes
//
//	clusters: [{name: default%s}]
//
// with it.
func (b *Broker) ClusterYAML(t testing.TB) string {
	t.Helper()
	return ClusterYAML(b.Seeds(t), b.tls, b.sasl)
}

// ClusterYAML returns the YAML keys of a cluster with these brokers, tls
// and sasl, each a flow mapping entry after a comma (see
// Broker.ClusterYAML).
func ClusterYAML(seeds []string, tls config.ClientTLS, sasl config.ClusterSASL) string {
	y := fmt.Sprintf(", brokers: [%q]", strings.Join(seeds, ","))
	if tls.Enabled {
		y += fmt.Sprintf(", tls: {enabled: true, ca_file: %q, cert_file: %q, key_file: %q}", tls.CAFile, tls.CertFile, tls.KeyFile)
	}
	if sasl.Mechanism != "" {
		y += fmt.Sprintf(", sasl: {mechanism: %q, username: %q, password: %q}", sasl.Mechanism, sasl.Username, sasl.Password)
	}
	return y
}

// Close stops the embedded broker if one started; for a TestMain that
// checks for leaks after the tests.
func (b *Broker) Close() {
	if b.embedded != nil {
		b.embedded.Close(context.Background())
	}
}

// Fake returns the embedded broker's kfake cluster, to inject faults with
// its control functions; nil against a real broker.
func (b *Broker) Fake(t testing.TB) *kfake.Cluster {
	b.Seeds(t)
	if b.embedded == nil {
		return nil
	}
	return b.embedded.Fake()
}

// Client returns a plain franz-go client of the brokers with opts (which
// may override the seeds), closed when the test ends.
func (b *Broker) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(b.Opts(t), opts...)...)
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
	cl, err := kgo.NewClient(b.Opts(t)...)
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
