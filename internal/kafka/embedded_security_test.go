package kafka

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// embeddedCert writes a server certificate for 127.0.0.1 and its key, and
// the CA that signed them, into a new directory.
func embeddedCert(t *testing.T) (tlsCfg config.EmbeddedTLS, caFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t)
	cert, key, _ := ca.Issue(t, x509.ExtKeyUsageServerAuth)
	tlsCfg = config.EmbeddedTLS{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem")}
	caFile = filepath.Join(dir, "ca.pem")
	for name, b := range map[string][]byte{tlsCfg.CertFile: cert, tlsCfg.KeyFile: key, caFile: ca.PEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tlsCfg, caFile
}

func startSecuredEmbedded(t *testing.T, tlsCfg config.EmbeddedTLS, sasl config.EmbeddedSASL) *Embedded {
	t.Helper()
	e, err := StartEmbedded(0, 1, EmbeddedSecurity(tlsCfg, sasl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(t.Context()) })
	return e
}

// embeddedCluster is a cluster of Ferry's served by e, whose log goes to
// logs.
func embeddedCluster(e *Embedded, logs *logBuffer) *Cluster {
	c := securedCluster("embedded", nil, config.ClientTLS{}, config.ClusterSASL{}, logs)
	return e.Cluster(c.cfg, c.logger)
}

func TestEmbeddedTLSAndSASL(t *testing.T) {
	tlsCfg, caFile := embeddedCert(t)
	for _, mech := range []string{config.SASLPlain, config.SASLScramSHA256, config.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			sasl := config.EmbeddedSASL{Mechanism: mech, Username: "ferry", Password: "s3cret-pass"}
			e := startSecuredEmbedded(t, tlsCfg, sasl)
			var logs logBuffer

			// Ferry's own clusters reach the broker with its settings.
			roundTrip(t, embeddedCluster(e, &logs))

			// An outside client needs the CA and the user.
			outside := securedCluster("outside", e.Addrs(), config.ClientTLS{Enabled: true, CAFile: caFile},
				config.ClusterSASL{Mechanism: mech, Username: "ferry", Password: "s3cret-pass"}, &logs)
			if err := outside.Start(t.Context()); err != nil {
				t.Errorf("an outside client with the CA and the user: %v", err)
			}
			for name, c := range map[string]*Cluster{
				"plaintext":      securedCluster("outside", e.Addrs(), config.ClientTLS{}, config.ClusterSASL{Mechanism: mech, Username: "ferry", Password: "s3cret-pass"}, &logs),
				"no SASL":        securedCluster("outside", e.Addrs(), config.ClientTLS{Enabled: true, CAFile: caFile}, config.ClusterSASL{}, &logs),
				"wrong password": securedCluster("outside", e.Addrs(), config.ClientTLS{Enabled: true, CAFile: caFile}, config.ClusterSASL{Mechanism: mech, Username: "ferry", Password: "wrong"}, &logs),
			} {
				t.Run(name, func(t *testing.T) {
					if msg := startFails(t, c); !strings.Contains(msg, map[string]string{
						"plaintext": "clusters[].tls.enabled?", "no SASL": "does it require SASL? (clusters[].sasl?)", "wrong password": "clusters[].sasl",
					}[name]) {
						t.Errorf("the error does not point at the setting: %s", msg)
					}
				})
			}
			if strings.Contains(logs.String(), "s3cret-pass") {
				t.Error("the password is in the log")
			}
		})
	}
}

func TestEmbeddedTLSOnly(t *testing.T) {
	tlsCfg, _ := embeddedCert(t)
	e := startSecuredEmbedded(t, tlsCfg, config.EmbeddedSASL{})
	var logs logBuffer
	roundTrip(t, embeddedCluster(e, &logs))
	startFails(t, securedCluster("plaintext", e.Addrs(), config.ClientTLS{}, config.ClusterSASL{}, &logs))
}

// TestEmbeddedPinnedCertificate checks that Ferry's clusters accept the
// embedded broker's certificate only.
func TestEmbeddedPinnedCertificate(t *testing.T) {
	mine, _ := embeddedCert(t)
	other, _ := embeddedCert(t)
	e := startSecuredEmbedded(t, mine, config.EmbeddedSASL{})
	impostor := startSecuredEmbedded(t, other, config.EmbeddedSASL{})
	var logs logBuffer
	c := embeddedCluster(e, &logs)
	c.seeds = impostor.Addrs()
	if msg := startFails(t, c); !strings.Contains(msg, "not the embedded broker's") {
		t.Errorf("the error does not say the certificate is not the broker's: %s", msg)
	}
}
