package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// testCA is a throwaway certificate authority.
type testCA struct{ *testca.CA }

func newTestCA(t testing.TB) *testCA { return &testCA{testca.New(t)} }

// issue returns a certificate for 127.0.0.1 signed by the CA, in PEM, its
// key and its serial number.
func (ca *testCA) issue(t testing.TB, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, sn int64) {
	return ca.Issue(t, usage)
}

// clientCert is a client certificate signed by the CA.
func (ca *testCA) clientCert(t testing.TB) tls.Certificate {
	c, k, _ := ca.issue(t, x509.ExtKeyUsageClientAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// startTLSFerry starts Ferry with TLS on both listeners, configured by
// the given lines under each listener's tls section, and the server
// certificate in dir/server.pem and dir/server-key.pem.
func startTLSFerry(t *testing.T, ca *testCA, dir, tlsLines string) (a interface {
	GRPCAddr() string
	HTTPAddr() string
}, serverSerial int64) {
	t.Helper()
	c, k, sn := ca.issue(t, x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "server.pem"), string(c))
	writeFile(t, filepath.Join(dir, "server-key.pem"), string(k))
	writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM))
	section := "    tls:\n      cert_file: server.pem\n      key_file: server-key.pem\n" + tlsLines
	y := fmt.Sprintf(`
clusters: [{name: default%s}]
listeners:
  grpc:
    address: 127.0.0.1:0
    shutdown_timeout: 2s
%s  http:
    address: 127.0.0.1:0
%skafka_api:
  pixy: true
protos:
  - files: [echo.proto]
    import_paths: [%q]
log:
  level: ${FERRY_TEST_LOG:-warn}
`, kit.ClusterYAML(t), section, section, filepath.Join(root(t), "examples", "echo"))
	path := filepath.Join(dir, "ferry.yaml")
	writeFile(t, path, y)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", y, err)
	}
	return startConfig(t, cfg), sn
}

// healthCheck calls grpc.health.v1 on addr with creds.
func healthCheck(t testing.TB, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// ping gets /_ping over HTTPS and returns the serial number of the
// certificate the server presented.
func ping(t testing.TB, addr string, cfg *tls.Config) (int64, error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + addr + "/_ping")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /_ping: %s", resp.Status)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestListenersTLS(t *testing.T) {
	ca := newTestCA(t)
	a, _ := startTLSFerry(t, ca, t.TempDir(), "")
	if err := healthCheck(t, a.GRPCAddr(), credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})); err != nil {
		t.Fatalf("health check over TLS: %v", err)
	}
	if err := healthCheck(t, a.GRPCAddr(), insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext health check on the TLS listener answered")
	}
	if _, err := ping(t, a.HTTPAddr(), &tls.Config{RootCAs: ca.Pool}); err != nil {
		t.Fatalf("GET /_ping over TLS: %v", err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + a.HTTPAddr() + "/_ping")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plaintext GET /_ping on the TLS listener answered 200")
		}
	}
}

func TestListenersMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	a, _ := startTLSFerry(t, ca, t.TempDir(), "      client_auth: require\n      client_ca_file: ca.pem\n      min_version: \"1.3\"\n")
	if err := healthCheck(t, a.GRPCAddr(), credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})); err == nil {
		t.Fatal("a client without a certificate passed client_auth: require")
	}
	other := newTestCA(t)
	if err := healthCheck(t, a.GRPCAddr(), credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{other.clientCert(t)}})); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	withCert := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.clientCert(t)}}
	if err := healthCheck(t, a.GRPCAddr(), credentials.NewTLS(withCert)); err != nil {
		t.Fatalf("health check with a client certificate: %v", err)
	}
	if _, err := ping(t, a.HTTPAddr(), &tls.Config{RootCAs: ca.Pool}); err == nil {
		t.Fatal("an HTTP client without a certificate passed client_auth: require")
	}
	if _, err := ping(t, a.HTTPAddr(), withCert); err != nil {
		t.Fatalf("GET /_ping with a client certificate: %v", err)
	}
	if _, err := ping(t, a.HTTPAddr(), &tls.Config{RootCAs: ca.Pool, MaxVersion: tls.VersionTLS12, Certificates: withCert.Certificates}); err == nil {
		t.Fatal("TLS 1.2 was accepted with min_version 1.3")
	}
}

func TestListenersCertificateRotation(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	a, first := startTLSFerry(t, ca, dir, "")
	client := &tls.Config{RootCAs: ca.Pool}
	if sn, err := ping(t, a.HTTPAddr(), client); err != nil || sn != first {
		t.Fatalf("GET /_ping: serial %d, %v; want serial %d", sn, err, first)
	}
	// A pair that does not load keeps the last good one in use.
	writeFile(t, filepath.Join(dir, "server.pem"), "not a certificate\n")
	time.Sleep(1100 * time.Millisecond)
	if sn, err := ping(t, a.HTTPAddr(), client); err != nil || sn != first {
		t.Fatalf("after a broken certificate: serial %d, %v; want serial %d", sn, err, first)
	}
	c, k, second := ca.issue(t, x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "server-key.pem"), string(k))
	writeFile(t, filepath.Join(dir, "server.pem"), string(c))
	// Modification times may be coarse: make sure they moved.
	later := time.Now().Add(2 * time.Second)
	for _, f := range []string{"server.pem", "server-key.pem"} {
		if err := os.Chtimes(filepath.Join(dir, f), later, later); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		sn, err := ping(t, a.HTTPAddr(), client)
		if err == nil && sn == second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate (serial %d) is not served: serial %d, %v", second, sn, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var got int64
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, VerifyConnection: func(cs tls.ConnectionState) error {
		got = cs.PeerCertificates[0].SerialNumber.Int64()
		return nil
	}})
	if err := healthCheck(t, a.GRPCAddr(), creds); err != nil || got != second {
		t.Fatalf("gRPC after rotation: serial %d, %v; want serial %d", got, err, second)
	}
}
