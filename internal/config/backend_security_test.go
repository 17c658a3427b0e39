package config

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryproxy/ferry/internal/testkit/testca"
)

// loadBackend writes a configuration whose one back end has the given
// lines (indented under it) into a directory holding files, and loads it.
func loadBackend(t *testing.T, files map[string]string, backend string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := "backends:\n  - name: b\n    topic: requests\n    target: 127.0.0.1:50051\n" + backend
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestBackendSecurityErrors(t *testing.T) {
	const notPEM = "not a certificate\n"
	cases := []struct {
		name    string
		files   map[string]string
		backend string
		want    string
	}{
		{"cert without key", map[string]string{"c.pem": notPEM}, "    tls:\n      enabled: true\n      cert_file: c.pem\n",
			`ferry.yaml:5: backends[0].tls.key_file: cert_file needs key_file`},
		{"key without cert", map[string]string{"k.pem": notPEM}, "    tls:\n      enabled: true\n      key_file: k.pem\n",
			`ferry.yaml:5: backends[0].tls.cert_file: key_file needs cert_file`},
		{"unreadable CA", nil, "    tls:\n      enabled: true\n      ca_file: missing.pem\n",
			`ferry.yaml:7: backends[0].tls.ca_file: reading the CA file: open `},
		{"CA not PEM", map[string]string{"ca.pem": notPEM}, "    tls:\n      enabled: true\n      ca_file: ca.pem\n",
			`ferry.yaml:7: backends[0].tls.ca_file: the CA file `},
		{"client certificate not PEM", map[string]string{"c.pem": notPEM, "k.pem": notPEM}, "    tls:\n      enabled: true\n      cert_file: c.pem\n      key_file: k.pem\n",
			`ferry.yaml:7: backends[0].tls.cert_file: loading the client certificate `},
		{"tls keys without enabled", nil, "    tls:\n      server_name: echo\n",
			`ferry.yaml:6: backends[0].tls.server_name: is never used: set backends[0].tls.enabled: true`},
		{"skip verify without enabled", nil, "    tls:\n      insecure_skip_verify: true\n",
			`ferry.yaml:6: backends[0].tls.insecure_skip_verify: is never used`},
		{"upper-case key", nil, "    metadata:\n      X-Api-Key: hunter2\n",
			`ferry.yaml:6: backends[0].metadata.X-Api-Key: "X-Api-Key" has upper-case letters: gRPC metadata keys are lower case, write "x-api-key"`},
		{"illegal key", nil, "    metadata:\n      \"x api\": hunter2\n",
			`backends[0].metadata.x api: "x api" has ' ': gRPC metadata keys allow only`},
		{"pseudo-header", nil, "    metadata:\n      \":authority\": hunter2\n",
			`backends[0].metadata.:authority: ":authority" is an HTTP/2 pseudo-header`},
		{"grpc key", nil, "    metadata:\n      grpc-timeout: 1S\n",
			`ferry.yaml:6: backends[0].metadata.grpc-timeout: "grpc-timeout": keys starting with grpc- are reserved for gRPC`},
		{"transport key", nil, "    metadata:\n      user-agent: hunter2\n",
			`ferry.yaml:6: backends[0].metadata.user-agent: "user-agent" is set by gRPC itself`},
		{"te", nil, "    metadata:\n      te: hunter2\n",
			`backends[0].metadata.te: "te" is set by gRPC itself`},
		{"request id", nil, "    metadata:\n      x-request-id: hunter2\n",
			`ferry.yaml:6: backends[0].metadata.x-request-id: "x-request-id" is set by Ferry on every call, to the caller's request id`},
		{"correlation id", nil, "    metadata:\n      ferry-correlation-id: hunter2\n",
			`backends[0].metadata.ferry-correlation-id: "ferry-correlation-id" is set by Ferry on every call`},
		{"idempotency key", nil, "    metadata:\n      idempotency-key: hunter2\n",
			`backends[0].metadata.idempotency-key: "idempotency-key" is set by Ferry on every call`},
		{"empty value", nil, "    metadata:\n      x-api-key: ${FERRY_TEST_UNSET_KEY:-}\n",
			`ferry.yaml:6: backends[0].metadata.x-api-key: is empty: give it a value`},
		{"control character", nil, "    metadata:\n      x-api-key: \"hunter2\\n\"\n",
			`backends[0].metadata.x-api-key: has a byte that is not printable ASCII at position 7`},
		{"binary not base64", nil, "    metadata:\n      x-token-bin: \"hunter2!\"\n",
			`ferry.yaml:6: backends[0].metadata.x-token-bin: is not base64`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadBackend(t, c.files, c.backend)
			if err == nil {
				t.Fatalf("loaded; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to hold\n  %s", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the metadata value is in the error: %v", err)
			}
		})
	}
}

// TestBackendSecurityFiles: relative TLS files are taken from the config
// file's directory, and metadata values come out as sent.
func TestBackendSecurityFiles(t *testing.T) {
	ca := testca.New(t)
	cert, key, _ := ca.Issue(t, x509.ExtKeyUsageClientAuth)
	t.Setenv("FERRY_TEST_API_KEY", "k-123")
	_, err := loadBackend(t, nil, "    metadata:\n      x-raw-bin: AAEC_w\n")
	// Unpadded base64 is accepted, the URL alphabet is not.
	if err == nil || !strings.Contains(err.Error(), "x-raw-bin: is not base64") {
		t.Errorf("err = %v, want x-raw-bin refused as not base64", err)
	}
	cfg, err := loadBackend(t, map[string]string{"ca.pem": string(ca.PEM), "client.pem": string(cert), "client-key.pem": string(key)},
		"    tls:\n      enabled: true\n      ca_file: ca.pem\n      cert_file: client.pem\n      key_file: client-key.pem\n      server_name: echo.internal\n"+
			"    metadata:\n      x-api-key: ${FERRY_TEST_API_KEY}\n      x-token-bin: AAEC/w==\n      x-raw-bin: AAEC/w\n")
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backends[0]
	for _, f := range []string{b.TLS.CAFile, b.TLS.CertFile, b.TLS.KeyFile} {
		if !filepath.IsAbs(f) || filepath.Dir(f) != filepath.Dir(cfg.File()) {
			t.Errorf("tls file %q, want it in the config file's directory %s", f, filepath.Dir(cfg.File()))
		}
	}
	tc, err := b.TLS.Config()
	if err != nil || tc == nil || tc.ServerName != "echo.internal" || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Errorf("TLS.Config() = %+v, %v; want the CA, the client certificate and the server name", tc, err)
	}
	md, err := b.MetadataValues()
	want := map[string]string{"x-api-key": "k-123", "x-token-bin": "\x00\x01\x02\xff", "x-raw-bin": "\x00\x01\x02\xff"}
	if err != nil || len(md) != len(want) {
		t.Fatalf("MetadataValues() = %q, %v; want %q", md, err, want)
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("MetadataValues()[%q] = %q, want %q", k, md[k], v)
		}
	}
}

// FuzzMetadataEntry: any key and value is accepted or refused without a
// panic, an error about the value is one of its fixed messages (so it
// never holds the value), and an accepted text value is sent as written.
func FuzzMetadataEntry(f *testing.F) {
	for _, s := range [][2]string{{"x-api-key", "k-1"}, {"x-token-bin", "AAEC/w=="}, {"X-Up", "v"}, {"grpc-x", "v"}, {"x-request-id", "r"}, {"x-bin", "AAEC_w"}, {"x-k", "a\tb"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, val string) {
		got, err := metadataEntry(key, val, ferryMetadata)
		if err == nil {
			if !strings.HasSuffix(key, "-bin") && got != val {
				t.Errorf("metadataEntry(%q, %q) = %q, want the value as written", key, val, got)
			}
			return
		}
		if checkMetadataKey(key, ferryMetadata) != nil {
			return // about the key, which is no secret
		}
		// The same error for a value of the same fault that is no secret.
		canon := ""
		switch {
		case val == "":
		case strings.HasSuffix(key, "-bin"):
			canon = "!"
		default:
			i := strings.IndexFunc(val, func(r rune) bool { return r < 0x20 || r > 0x7e })
			canon = strings.Repeat("a", i) + "\x00"
		}
		if _, want := metadataEntry(key, canon, ferryMetadata); want == nil || err.Error() != want.Error() {
			t.Errorf("metadataEntry(%q, %q): error %q, want %v", key, val, err, want)
		}
	})
}
