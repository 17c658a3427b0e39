package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// testPKI is a throwaway certificate authority with a server certificate
// for 127.0.0.1 and a client certificate, written as PEM files in dir.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string // the CA, and the client's certificate and key
	server                    tls.Certificate
	pool                      *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t)
	leaf := func(usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		c, k, _ := ca.Issue(t, usage)
		return c, k
	}
	p := &testPKI{dir: dir, caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"), keyFile: filepath.Join(dir, "client-key.pem")}
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(p.caFile, ca.PEM)
	cert, key := leaf(x509.ExtKeyUsageClientAuth)
	write(p.certFile, cert)
	write(p.keyFile, key)
	scert, skey := leaf(x509.ExtKeyUsageServerAuth)
	var err error
	if p.server, err = tls.X509KeyPair(scert, skey); err != nil {
		t.Fatal(err)
	}
	p.pool = ca.Pool
	return p
}

// serverTLS is the embedded broker's TLS configuration; clientAuth is
// whether it requires client certificates signed by the CA.
func (p *testPKI) serverTLS(clientAuth bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
	if clientAuth {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.pool
	}
	return c
}

// startBroker runs an embedded broker with opts and returns its address.
func startBroker(t *testing.T, opts ...kfake.Opt) []string {
	t.Helper()
	kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(1, "sec")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kf.Close)
	return kf.ListenAddrs()
}

// securedCluster is a Cluster configured with tls and sasl, whose log
// goes to logs.
// logBuffer is a log destination that franz-go's goroutines write while
// a test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was logged so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func securedCluster(name string, seeds []string, tlsCfg config.ClientTLS, sasl config.ClusterSASL, logs *logBuffer) *Cluster {
	cfg := config.Cluster{
		Name: name, ClientID: "ferry", DialTimeout: 3 * time.Second, TLS: tlsCfg, SASL: sasl,
		Producer: config.Producer{MaxBufferedRecords: 1000, Compression: "none", DeliveryTimeout: 10 * time.Second},
	}
	return NewCluster(cfg, seeds, slog.New(slog.NewTextHandler(logs, nil)))
}

// roundTrip starts c, produces one record and reads it back.
func roundTrip(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Close(ctx)
	p, err := c.Producer(AcksInSyncReplicas)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Topic: "sec", Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	r, err := c.NewPartitionReader("sec", map[int32]int64{0: 0}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fs := r.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatalf("reading: %v", err)
	}
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "hello" {
		t.Fatalf("read %v, want the record written", recs)
	}
}

// startFails starts c and returns its error, failing the test when Start
// succeeds or takes longer than the dial timeout allows.
func startFails(t *testing.T, c *Cluster) string {
	t.Helper()
	begin := time.Now()
	err := c.Start(context.Background())
	if err == nil {
		t.Fatal("Start succeeded")
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Start took %v to fail", d)
	}
	t.Log(err)
	return err.Error()
}

func TestTLSWithCAFile(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(false)))
	var logs logBuffer
	roundTrip(t, securedCluster("tls", seeds, config.ClientTLS{Enabled: true, CAFile: pki.caFile}, config.ClusterSASL{}, &logs))
}

func TestMTLS(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(true)))
	var logs logBuffer
	roundTrip(t, securedCluster("mtls", seeds, config.ClientTLS{Enabled: true, CAFile: pki.caFile, CertFile: pki.certFile, KeyFile: pki.keyFile}, config.ClusterSASL{}, &logs))

	msg := startFails(t, securedCluster("mtls", seeds, config.ClientTLS{Enabled: true, CAFile: pki.caFile}, config.ClusterSASL{}, &logs))
	if !strings.Contains(msg, `cluster "mtls"`) || !strings.Contains(msg, "clusters[].tls.cert_file") {
		t.Errorf("the error does not point at the client certificate: %s", msg)
	}
}

func TestUntrustedCA(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(false)))
	var logs logBuffer
	msg := startFails(t, securedCluster("x", seeds, config.ClientTLS{Enabled: true, CAFile: other.caFile}, config.ClusterSASL{}, &logs))
	if !strings.Contains(msg, `cluster "x"`) || !strings.Contains(msg, "unknown authority (clusters[].tls.ca_file?)") {
		t.Errorf("the error does not point at the CA: %s", msg)
	}
}

func TestTLSAgainstPlaintext(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t)
	var logs logBuffer
	msg := startFails(t, securedCluster("x", seeds, config.ClientTLS{Enabled: true, CAFile: pki.caFile}, config.ClusterSASL{}, &logs))
	if !strings.Contains(msg, "clusters[].tls") {
		t.Errorf("the error does not point at tls: %s", msg)
	}
}

func TestPlaintextAgainstTLS(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(false)))
	var logs logBuffer
	msg := startFails(t, securedCluster("x", seeds, config.ClientTLS{}, config.ClusterSASL{}, &logs))
	if !strings.Contains(msg, "clusters[].tls.enabled") {
		t.Errorf("the error does not point at tls.enabled: %s", msg)
	}
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			seeds := startBroker(t, kfake.EnableSASL(), kfake.Superuser(mech, "ferry", "s3cret-pass"))
			var logs logBuffer
			roundTrip(t, securedCluster("sasl", seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: mech, Username: "ferry", Password: "s3cret-pass"}, &logs))

			msg := startFails(t, securedCluster("sasl", seeds, config.ClientTLS{}, config.ClusterSASL{Mechanism: mech, Username: "ferry", Password: "wrong-pass"}, &logs))
			if !strings.Contains(msg, `cluster "sasl"`) || !strings.Contains(msg, "SASL authentication failed (wrong username or password?") {
				t.Errorf("the error does not say the password is wrong: %s", msg)
			}
			for _, secret := range []string{"s3cret-pass", "wrong-pass"} {
				if strings.Contains(msg, secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("the password %q is in the error or the log", secret)
				}
			}
		})
	}
}

func TestSASLOverTLSWithPasswordFile(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(false)), kfake.EnableSASL(), kfake.Superuser(config.SASLScramSHA512, "ferry", "s3cret-pass"))
	file := filepath.Join(pki.dir, "password")
	if err := os.WriteFile(file, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	roundTrip(t, securedCluster("sasl-ssl", seeds, config.ClientTLS{Enabled: true, CAFile: pki.caFile}, config.ClusterSASL{Mechanism: config.SASLScramSHA512, Username: "ferry", PasswordFile: file}, &logs))
}

// TestSecurityHintKafkaErrors covers the answers of a real broker, which
// the embedded broker gives differently (it closes the connection).
func TestSecurityHintKafkaErrors(t *testing.T) {
	c := NewCluster(config.Cluster{Name: "x", SASL: config.ClusterSASL{Mechanism: config.SASLScramSHA512}}, nil, slog.New(slog.DiscardHandler))
	for err, want := range map[error]string{
		kerr.SaslAuthenticationFailed: "wrong username or password?",
		kerr.UnsupportedSaslMechanism: "SASL mechanism SCRAM-SHA-512",
		kerr.TopicAuthorizationFailed: "",
		// What franz-go makes of the TLS alert a real broker's SASL_SSL
		// listener sends a plaintext client.
		errors.New("invalid large response size 352518912 > limit 104857600; the first three bytes received appear to be a tls alert record for TLS v1.2; is this a plaintext connection speaking to a tls endpoint?"): "it speaks TLS (clusters[].tls.enabled?)",
	} {
		if got := c.securityHint(fmt.Errorf("dial: %w", err)); want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("hint for %v = %q, want it to say %q", err, got, want)
		}
	}
}

func TestInsecureSkipVerifyWarns(t *testing.T) {
	pki := newTestPKI(t)
	seeds := startBroker(t, kfake.TLS(pki.serverTLS(false)))
	var logs logBuffer
	roundTrip(t, securedCluster("skip", seeds, config.ClientTLS{Enabled: true, InsecureSkipVerify: true}, config.ClusterSASL{}, &logs))
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "insecure_skip_verify") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
}
