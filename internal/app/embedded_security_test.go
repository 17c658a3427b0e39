package app_test

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/kafka"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestEchoExampleSecuredEmbedded runs the echo example on an embedded
// broker that requires TLS and SCRAM: Ferry's produce route and back end
// reach it by themselves, and an outside client needs the CA and the user.
func TestEchoExampleSecuredEmbedded(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	cert, key, _ := ca.Issue(t, x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "kafka.pem"), string(cert))
	writeFile(t, filepath.Join(dir, "kafka-key.pem"), string(key))
	writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM))

	t.Setenv("FERRY_BROKERS", "")
	cfg, err := config.Load(filepath.Join(root(t), "examples", "echo", "ferry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Embedded.Port = 0
	cfg.Listeners.GRPC.Address = "127.0.0.1:0"
	cfg.Embedded.TLS = config.EmbeddedTLS{CertFile: filepath.Join(dir, "kafka.pem"), KeyFile: filepath.Join(dir, "kafka-key.pem")}
	cfg.Embedded.SASL = config.EmbeddedSASL{Mechanism: config.SASLScramSHA512, Username: "ferry", Password: "embedded-secret"}
	a := startConfig(t, cfg)

	ctx := testkit.Context(t, 30*time.Second)
	if res := call(ctx, dial(t, a), "UnaryEcho", nil, "Hello"); res.err != nil || len(res.msgs) != 1 || res.msgs[0] != "Hello" {
		t.Fatalf("UnaryEcho = %q, %v; want Hello", res.msgs, res.err)
	}

	outside := func(tls config.ClientTLS, sasl config.ClusterSASL) error {
		opts, err := kafka.SecurityOpts(config.Cluster{TLS: tls, SASL: sasl})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(a.KafkaAddrs("default")...), kgo.DialTimeout(5*time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		return cl.Ping(ctx)
	}
	user := config.ClusterSASL{Mechanism: config.SASLScramSHA512, Username: "ferry", Password: "embedded-secret"}
	if err := outside(config.ClientTLS{Enabled: true, CAFile: filepath.Join(dir, "ca.pem")}, user); err != nil {
		t.Errorf("an outside client with the CA and the user: %v", err)
	}
	if err := outside(config.ClientTLS{}, user); err == nil {
		t.Error("a plaintext client reached the broker")
	}
	if err := outside(config.ClientTLS{Enabled: true, CAFile: filepath.Join(dir, "ca.pem")}, config.ClusterSASL{}); err == nil {
		t.Error("a client without SASL reached the broker")
	}
}
