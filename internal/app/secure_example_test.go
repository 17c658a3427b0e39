package app_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// exampleToken signs a token with examples/secure's key, as
// `go run ./examples/secure/token -sub SUB -aud ferry -roles ROLES` does.
func exampleToken(t testing.TB, sub string, roles ...string) string {
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(root(t), "examples", "secure", "jwt-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwt.ParseECPrivateKeyFromPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"sub": sub, "aud": "ferry", "roles": roles, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = "ferry-example"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSecureExample runs examples/secure as the README does, with its
// certificates from the test CA: a TLS listener, an embedded broker that
// requires TLS and SASL, JWTs signed by the example's key and client
// certificates.
func TestSecureExample(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	c, k, _ := ca.issue(t, x509.ExtKeyUsageServerAuth)
	writeFile(t, filepath.Join(dir, "server.pem"), string(c))
	writeFile(t, filepath.Join(dir, "server-key.pem"), string(k))
	writeFile(t, filepath.Join(dir, "ca.pem"), string(ca.PEM))
	t.Setenv("FERRY_CERTS", dir)
	a := startConfig(t, loadExample(t, "secure"))
	ctx := testkit.Context(t, 30*time.Second)

	callWith := func(md metadata.MD, certs ...tls.Certificate) error {
		cc, err := grpc.NewClient(a.GRPCAddr(),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: certs})),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		r := call(ctx, cc, "UnaryEcho", md, "hello")
		if r.err == nil && (len(r.msgs) != 1 || r.msgs[0] != "hello") {
			t.Errorf("echo answered %q", r.msgs)
		}
		return r.err
	}
	if err := callWith(bearerMD(exampleToken(t, "alice", "echo"))); err != nil {
		t.Fatalf("alice's token: %v", err)
	}
	if err := callWith(bearerMD(exampleToken(t, "carol", "echo"))); err != nil {
		t.Fatalf("a token with the role echo: %v", err)
	}
	cert, key, _ := ca.IssueNamed(t, x509.ExtKeyUsageClientAuth, "alice")
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := callWith(nil, pair); err != nil {
		t.Fatalf("alice's client certificate: %v", err)
	}
	if err := callWith(bearerMD(exampleToken(t, "bob"))); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bob: %v; want PERMISSION_DENIED", err)
	}
	if err := callWith(nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no credentials: %v; want UNAUTHENTICATED", err)
	}
}

// TestSecureExampleCerts runs examples/secure/certs.sh and checks what it
// writes: a server certificate for 127.0.0.1 and a client certificate for
// alice, both signed by its CA.
func TestSecureExampleCerts(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("certs.sh needs openssl, which is not on PATH")
	}
	dir := t.TempDir()
	out, err := exec.Command("bash", filepath.Join(root(t), "examples", "secure", "certs.sh"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("certs.sh: %v\n%s", err, out)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, tc := range []struct {
		name  string
		usage x509.ExtKeyUsage
		check func(*x509.Certificate) error
	}{
		{"server", x509.ExtKeyUsageServerAuth, func(c *x509.Certificate) error { return c.VerifyHostname("127.0.0.1") }},
		{"client", x509.ExtKeyUsageClientAuth, func(c *x509.Certificate) error {
			if c.Subject.CommonName != "alice" {
				return fmt.Errorf("common name %q, want alice", c.Subject.CommonName)
			}
			return nil
		}},
	} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, tc.name+".pem"), filepath.Join(dir, tc.name+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s certificate: %v", tc.name, err)
		}
		if err := tc.check(leaf); err != nil {
			t.Errorf("%s certificate: %v", tc.name, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "client-key.pem")); !strings.Contains(string(b), "PRIVATE KEY") {
		t.Error("client-key.pem holds no private key")
	}
}
