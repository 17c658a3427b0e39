package kafka

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
)

// The user that scripts/kafka.sh creates on its SASL_SSL listener for every
// mechanism (FERRY_KAFKA_SECURE=1).
const (
	realSASLUser     = "ferry"
	realSASLPassword = "ferry-secret"
)

// realSecureBroker returns the address of a real broker's SASL_SSL listener
// and the CA file that signed its certificate, or skips the test.
func realSecureBroker(t *testing.T) (seeds []string, caFile string) {
	t.Helper()
	addr, ca := os.Getenv("FERRY_TEST_SECURE_BROKERS"), os.Getenv("FERRY_TEST_SECURE_CA")
	if addr == "" || ca == "" {
		t.Skip("set FERRY_TEST_SECURE_BROKERS (host:port of a SASL_SSL listener) and FERRY_TEST_SECURE_CA (its CA file) to test against a real broker; " +
			"FERRY_KAFKA_SECURE=1 scripts/kafka.sh start writes both into $FERRY_KAFKA_DIR (secure.addr, ca.pem)")
	}
	return strings.Split(addr, ","), ca
}

// realRoundTrip starts c, produces one record to a new topic and reads it
// back.
func realRoundTrip(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Close(ctx)
	topic := fmt.Sprintf("ferry-secure-%d", time.Now().UnixNano())
	p, err := c.Producer(AcksInSyncReplicas)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	r, err := c.NewPartitionReader(topic, map[int32]int64{0: 0}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		fs := r.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("reading: %v", err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if len(recs) != 1 || string(recs[0].Value) != "hello" {
				t.Fatalf("read %v, want the record written", recs)
			}
			return
		}
	}
}

// TestRealBrokerSASLSSL produces and consumes over TLS with each SASL
// mechanism against a real Apache Kafka broker.
func TestRealBrokerSASLSSL(t *testing.T) {
	seeds, ca := realSecureBroker(t)
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			var logs logBuffer
			realRoundTrip(t, securedCluster("real", seeds, config.ClientTLS{Enabled: true, CAFile: ca},
				config.ClusterSASL{Mechanism: mech, Username: realSASLUser, Password: realSASLPassword}, &logs))
		})
	}
}

// TestRealBrokerWrongPassword checks that the real broker's answer to a
// wrong password makes Start fail at once, saying so.
func TestRealBrokerWrongPassword(t *testing.T) {
	seeds, ca := realSecureBroker(t)
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			var logs logBuffer
			msg := startFails(t, securedCluster("real", seeds, config.ClientTLS{Enabled: true, CAFile: ca},
				config.ClusterSASL{Mechanism: mech, Username: realSASLUser, Password: "wrong-pass"}, &logs))
			if !strings.Contains(msg, `cluster "real"`) || !strings.Contains(msg, "SASL authentication failed (wrong username or password? clusters[].sasl)") {
				t.Errorf("the error does not say the password is wrong: %s", msg)
			}
			if strings.Contains(msg, "wrong-pass") || strings.Contains(logs.String(), "wrong-pass") {
				t.Error("the password is in the error or the log")
			}
		})
	}
}

// TestRealBrokerUntrustedCA checks that the system's pool, which does not
// hold the broker's CA, makes Start fail at once with a hint at ca_file.
func TestRealBrokerUntrustedCA(t *testing.T) {
	seeds, _ := realSecureBroker(t)
	var logs logBuffer
	msg := startFails(t, securedCluster("real", seeds, config.ClientTLS{Enabled: true},
		config.ClusterSASL{Mechanism: config.SASLScramSHA512, Username: realSASLUser, Password: realSASLPassword}, &logs))
	if !strings.Contains(msg, "unknown authority (clusters[].tls.ca_file?)") {
		t.Errorf("the error does not point at the CA: %s", msg)
	}
}

// TestRealBrokerPlaintextAgainstSASLSSL checks that a client without TLS
// fails within dial_timeout with a hint at tls.enabled, with SASL and
// without.
func TestRealBrokerPlaintextAgainstSASLSSL(t *testing.T) {
	seeds, _ := realSecureBroker(t)
	for name, sasl := range map[string]config.ClusterSASL{
		"no SASL": {},
		"SASL":    {Mechanism: config.SASLScramSHA256, Username: realSASLUser, Password: realSASLPassword},
	} {
		t.Run(name, func(t *testing.T) {
			var logs logBuffer
			msg := startFails(t, securedCluster("real", seeds, config.ClientTLS{}, sasl, &logs))
			if !strings.Contains(msg, "it speaks TLS (clusters[].tls.enabled?)") {
				t.Errorf("the error does not point at tls.enabled: %s", msg)
			}
		})
	}
}

// realMTLSBroker returns the address of a real broker's SSL listener that
// requires client certificates, with the CA file and a client certificate
// and key the CA signed, or skips the test.
func realMTLSBroker(t *testing.T) (seeds []string, tlsCfg config.ClientTLS) {
	t.Helper()
	addr, ca := os.Getenv("FERRY_TEST_MTLS_BROKERS"), os.Getenv("FERRY_TEST_SECURE_CA")
	cert, key := os.Getenv("FERRY_TEST_MTLS_CERT"), os.Getenv("FERRY_TEST_MTLS_KEY")
	if addr == "" || ca == "" || cert == "" || key == "" {
		t.Skip("set FERRY_TEST_MTLS_BROKERS (host:port of an SSL listener requiring client certificates), FERRY_TEST_SECURE_CA, " +
			"FERRY_TEST_MTLS_CERT and FERRY_TEST_MTLS_KEY to test mTLS against a real broker; " +
			"FERRY_KAFKA_SECURE=1 scripts/kafka.sh start writes them into $FERRY_KAFKA_DIR (mtls.addr, ca.pem, client.pem, client-key.pem)")
	}
	return strings.Split(addr, ","), config.ClientTLS{Enabled: true, CAFile: ca, CertFile: cert, KeyFile: key}
}

// TestRealBrokerMTLS produces and consumes with a client certificate.
func TestRealBrokerMTLS(t *testing.T) {
	seeds, tlsCfg := realMTLSBroker(t)
	var logs logBuffer
	realRoundTrip(t, securedCluster("real", seeds, tlsCfg, config.ClusterSASL{}, &logs))
}

// TestRealBrokerMTLSRefused checks that Start fails at once, pointing at
// the client certificate, without one and with one from another CA.
func TestRealBrokerMTLSRefused(t *testing.T) {
	seeds, tlsCfg := realMTLSBroker(t)
	other := newTestPKI(t)
	for name, cfg := range map[string]config.ClientTLS{
		"no client certificate":     {Enabled: true, CAFile: tlsCfg.CAFile},
		"certificate of another CA": {Enabled: true, CAFile: tlsCfg.CAFile, CertFile: other.certFile, KeyFile: other.keyFile},
	} {
		t.Run(name, func(t *testing.T) {
			var logs logBuffer
			msg := startFails(t, securedCluster("real", seeds, cfg, config.ClusterSASL{}, &logs))
			if !strings.Contains(msg, `cluster "real"`) || !strings.Contains(msg, "clusters[].tls.cert_file and key_file") {
				t.Errorf("the error does not point at the client certificate: %s", msg)
			}
		})
	}
}

// TestRealBrokerPlaintextAgainstMTLS checks that a client without TLS
// fails at once on the mTLS listener, with a hint at tls.enabled.
func TestRealBrokerPlaintextAgainstMTLS(t *testing.T) {
	seeds, _ := realMTLSBroker(t)
	var logs logBuffer
	msg := startFails(t, securedCluster("real", seeds, config.ClientTLS{}, config.ClusterSASL{}, &logs))
	if !strings.Contains(msg, "it speaks TLS (clusters[].tls.enabled?)") {
		t.Errorf("the error does not point at tls.enabled: %s", msg)
	}
}
