package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a self-signed certificate and its key, in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ferry"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func TestListenerTLSErrors(t *testing.T) {
	const notPEM = "not a certificate\n"
	cert, key := selfSigned(t)
	good := map[string]string{"c.pem": cert, "k.pem": key, "ca.pem": cert}
	const pair = "      cert_file: c.pem\n      key_file: k.pem\n"
	cases := []struct {
		name      string
		files     map[string]string
		listeners string
		want      string
	}{
		{"cert without key", good, "  grpc:\n    tls:\n      cert_file: c.pem\n",
			`ferry.yaml:6: listeners.grpc.tls.key_file: is required with cert_file`},
		{"key without cert", good, "  http:\n    tls:\n      key_file: k.pem\n",
			`ferry.yaml:6: listeners.http.tls.cert_file: is required with key_file`},
		{"unreadable certificate", nil, "  grpc:\n    tls:\n" + pair,
			`ferry.yaml:7: listeners.grpc.tls.cert_file: loading the server certificate `},
		{"certificate not PEM", map[string]string{"c.pem": notPEM, "k.pem": notPEM}, "  http:\n    tls:\n" + pair,
			`ferry.yaml:7: listeners.http.tls.cert_file: loading the server certificate `},
		{"bad version", good, "  grpc:\n    tls:\n" + pair + "      min_version: \"1.1\"\n",
			`ferry.yaml:9: listeners.grpc.tls.min_version: "1.1" is not a TLS version: use "1.2" or "1.3"`},
		{"bad client auth", good, "  grpc:\n    tls:\n" + pair + "      client_auth: always\n",
			`ferry.yaml:9: listeners.grpc.tls.client_auth: "always" is not a client certificate mode: use none, request or require`},
		{"client auth without CA", good, "  http:\n    tls:\n" + pair + "      client_auth: require\n",
			`ferry.yaml:6: listeners.http.tls.client_ca_file: is required with client_auth: require`},
		{"unreadable client CA", good, "  grpc:\n    tls:\n" + pair + "      client_auth: request\n      client_ca_file: missing.pem\n",
			`ferry.yaml:10: listeners.grpc.tls.client_ca_file: reading the client CA file: open `},
		{"client CA not PEM", map[string]string{"c.pem": cert, "k.pem": key, "ca.pem": notPEM}, "  grpc:\n    tls:\n" + pair + "      client_auth: require\n      client_ca_file: ca.pem\n",
			`listeners.grpc.tls.client_ca_file: the client CA file `},
		{"client auth without TLS", good, "  grpc:\n    tls:\n      client_auth: require\n      client_ca_file: ca.pem\n",
			`ferry.yaml:7: listeners.grpc.tls.client_auth: is never used: set listeners.grpc.tls.cert_file and key_file to serve TLS`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadCluster(t, c.files, "listeners:\n"+c.listeners)
			if err == nil {
				t.Fatalf("loaded; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to hold\n  %s", err, c.want)
			}
		})
	}
}

func TestListenerTLSConfig(t *testing.T) {
	cert, key := selfSigned(t)
	cfg, err := loadCluster(t, map[string]string{"c.pem": cert, "k.pem": key, "ca.pem": cert},
		"listeners:\n  grpc:\n    tls:\n      cert_file: c.pem\n      key_file: k.pem\n      min_version: \"1.3\"\n      client_auth: require\n      client_ca_file: ca.pem\n")
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Listeners.HTTP.TLS; h.Enabled() || h.MinVersion != "1.2" || h.ClientAuth != ClientAuthNone {
		t.Errorf("listeners.http.tls = %+v, want plaintext with the defaults", h)
	}
	g := cfg.Listeners.GRPC.TLS
	if !filepath.IsAbs(g.CertFile) || !filepath.IsAbs(g.KeyFile) || !filepath.IsAbs(g.ClientCAFile) {
		t.Errorf("listeners.grpc.tls = %+v, want absolute file names", g)
	}
	tc, err := g.ServerConfig(nil)
	if err != nil || tc == nil {
		t.Fatalf("ServerConfig() = %v, %v", tc, err)
	}
	if tc.MinVersion != tls.VersionTLS13 || tc.ClientAuth != tls.RequireAndVerifyClientCert || tc.ClientCAs == nil {
		t.Errorf("ServerConfig() = %+v, want TLS 1.3, client certificates required and the client CAs", tc)
	}
	if c, err := tc.GetCertificate(nil); err != nil || c == nil {
		t.Errorf("GetCertificate() = %v, %v", c, err)
	}
	if tc, err := cfg.Listeners.HTTP.TLS.ServerConfig(nil); tc != nil || err != nil {
		t.Errorf("plaintext ServerConfig() = %v, %v; want nil", tc, err)
	}
}

func TestListenerTLSVersionUnquoted(t *testing.T) {
	cert, key := selfSigned(t)
	cfg, err := loadCluster(t, map[string]string{"c.pem": cert, "k.pem": key},
		"listeners:\n  http:\n    tls:\n      cert_file: c.pem\n      key_file: k.pem\n      min_version: 1.3\n")
	if err != nil {
		t.Fatal(err)
	}
	if v := cfg.Listeners.HTTP.TLS.MinVersion; v != "1.3" {
		t.Errorf("min_version = %q, want 1.3 read as written", v)
	}
}
