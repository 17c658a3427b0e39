package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadCluster writes a configuration whose one cluster has the given
// lines (indented under it) into a directory holding files, and loads it.
func loadCluster(t *testing.T, files map[string]string, cluster string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yaml := "clusters:\n  - name: main\n    brokers: [\"k:9092\"]\n" + cluster +
		"protos:\n  - files: [echo.proto]\nroutes:\n  - when:\n      - method: a.B/C\n    produce:\n      topic: t\n"
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestClusterSecurityErrors(t *testing.T) {
	const notPEM = "not a certificate\n"
	cases := []struct {
		name    string
		files   map[string]string
		cluster string
		want    string
	}{
		{"unknown mechanism", nil, "    sasl:\n      mechanism: GSSAPI\n      username: u\n      password: p\n",
			`ferry.yaml:5: clusters[0].sasl.mechanism: "GSSAPI" is not a SASL mechanism: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM`},
		{"no username", nil, "    sasl:\n      mechanism: PLAIN\n      password: p\n",
			`ferry.yaml:4: clusters[0].sasl.username: is required with sasl.mechanism`},
		{"no password", nil, "    sasl:\n      mechanism: PLAIN\n      username: u\n",
			`ferry.yaml:4: clusters[0].sasl.password: is required with sasl.mechanism`},
		{"both passwords", map[string]string{"pw": "p\n"}, "    sasl:\n      mechanism: SCRAM-SHA-256\n      username: u\n      password: hunter2\n      password_file: pw\n",
			`ferry.yaml:8: clusters[0].sasl.password_file: cannot go with sasl.password`},
		{"missing password file", nil, "    sasl:\n      mechanism: SCRAM-SHA-512\n      username: u\n      password_file: nowhere\n",
			`ferry.yaml:7: clusters[0].sasl.password_file: reading the password file: open `},
		{"user without mechanism", nil, "    sasl:\n      username: u\n      password: hunter2\n",
			`ferry.yaml:4: clusters[0].sasl.mechanism: is required with a username or password`},
		{"cert without key", map[string]string{"c.pem": notPEM}, "    tls:\n      enabled: true\n      cert_file: c.pem\n",
			`ferry.yaml:4: clusters[0].tls.key_file: cert_file needs key_file`},
		{"key without cert", map[string]string{"k.pem": notPEM}, "    tls:\n      enabled: true\n      key_file: k.pem\n",
			`ferry.yaml:4: clusters[0].tls.cert_file: key_file needs cert_file`},
		{"unreadable CA", nil, "    tls:\n      enabled: true\n      ca_file: missing.pem\n",
			`ferry.yaml:6: clusters[0].tls.ca_file: reading the CA file: open `},
		{"CA not PEM", map[string]string{"ca.pem": notPEM}, "    tls:\n      enabled: true\n      ca_file: ca.pem\n",
			`clusters[0].tls.ca_file: the CA file `},
		{"client certificate not PEM", map[string]string{"c.pem": notPEM, "k.pem": notPEM}, "    tls:\n      enabled: true\n      cert_file: c.pem\n      key_file: k.pem\n",
			`ferry.yaml:6: clusters[0].tls.cert_file: loading the client certificate `},
		{"OAUTHBEARER without token", nil, "    sasl:\n      mechanism: OAUTHBEARER\n",
			`ferry.yaml:4: clusters[0].sasl.token: is required with sasl.mechanism OAUTHBEARER (or sasl.token_file)`},
		{"both tokens", map[string]string{"tok": "t\n"}, "    sasl:\n      mechanism: OAUTHBEARER\n      token: hunter2\n      token_file: tok\n",
			`ferry.yaml:7: clusters[0].sasl.token_file: cannot go with sasl.token`},
		{"missing token file", nil, "    sasl:\n      mechanism: OAUTHBEARER\n      token_file: nowhere\n",
			`ferry.yaml:6: clusters[0].sasl.token_file: reading the token file: open `},
		{"empty token file", map[string]string{"tok": "\n"}, "    sasl:\n      mechanism: OAUTHBEARER\n      token_file: tok\n",
			`ferry.yaml:6: clusters[0].sasl.token_file: the token file `},
		{"password with OAUTHBEARER", nil, "    sasl:\n      mechanism: OAUTHBEARER\n      token: t\n      password: hunter2\n",
			`ferry.yaml:7: clusters[0].sasl.password: is not used by sasl.mechanism OAUTHBEARER`},
		{"bad extension key", nil, "    sasl:\n      mechanism: OAUTHBEARER\n      token: t\n      extensions:\n        logical-cluster: lkc-1\n",
			`clusters[0].sasl.extensions: key "logical-cluster": use letters only (RFC 7628)`},
		{"reserved extension key", nil, "    sasl:\n      mechanism: OAUTHBEARER\n      token: t\n      extensions:\n        auth: x\n",
			`clusters[0].sasl.extensions.auth: is reserved for the token`},
		{"token without mechanism", nil, "    sasl:\n      token: hunter2\n",
			`ferry.yaml:4: clusters[0].sasl.mechanism: is required with sasl.token`},
		{"AWS key without secret", nil, "    sasl:\n      mechanism: AWS_MSK_IAM\n      aws:\n        access_key_id: AKIAEXAMPLE\n",
			`clusters[0].sasl.aws.secret_access_key: is required with aws.access_key_id`},
		{"AWS session token alone", nil, "    sasl:\n      mechanism: AWS_MSK_IAM\n      aws:\n        session_token: hunter2\n",
			`ferry.yaml:7: clusters[0].sasl.aws.session_token: needs aws.access_key_id and aws.secret_access_key`},
		{"username with AWS_MSK_IAM", nil, "    sasl:\n      mechanism: AWS_MSK_IAM\n      username: u\n",
			`ferry.yaml:6: clusters[0].sasl.username: is not used by sasl.mechanism AWS_MSK_IAM`},
		{"token with SCRAM", nil, "    sasl:\n      mechanism: SCRAM-SHA-256\n      username: u\n      password: p\n      token: hunter2\n",
			`ferry.yaml:8: clusters[0].sasl.token: is not used by sasl.mechanism SCRAM-SHA-256`},
		{"tls keys without enabled", nil, "    tls:\n      server_name: kafka\n",
			`ferry.yaml:5: clusters[0].tls.server_name: is never used: set clusters[0].tls.enabled: true`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadCluster(t, c.files, c.cluster)
			if err == nil {
				t.Fatalf("loaded; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to hold\n  %s", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the password is in the error: %v", err)
			}
		})
	}
}

func TestClusterSecurityEmbedded(t *testing.T) {
	_, err := Parse("f.yaml", []byte("clusters:\n  - name: main\n    sasl:\n      mechanism: PLAIN\n      username: u\n      password: p\nroutes:\n  - when:\n      - method: a.B/C\n    produce:\n      topic: t\n"))
	if err == nil || !strings.Contains(err.Error(), "clusters[0].brokers: are needed for tls and sasl") {
		t.Errorf("err = %v, want the embedded broker refused", err)
	}
}

func TestClusterSecurityFiles(t *testing.T) {
	t.Setenv("FERRY_TEST_SASL_USER", "ferry")
	cfg, err := loadCluster(t, map[string]string{"pw": "s3cret\n"},
		"    tls:\n      enabled: true\n      server_name: kafka\n    sasl:\n      mechanism: SCRAM-SHA-512\n      username: ${FERRY_TEST_SASL_USER}\n      password_file: pw\n")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Clusters[0].SASL
	if !filepath.IsAbs(s.PasswordFile) || s.Username != "ferry" {
		t.Errorf("sasl = %+v, want an absolute password file and the user from the environment", s)
	}
	if pw, err := s.Secret(); err != nil || pw != "s3cret" {
		t.Errorf("Secret() = %q, %v; want the file's contents without the newline", pw, err)
	}
	tc, err := cfg.Clusters[0].TLS.Config()
	if err != nil || tc == nil || tc.ServerName != "kafka" || tc.RootCAs != nil {
		t.Errorf("TLS.Config() = %+v, %v; want the system pool and the server name", tc, err)
	}
}

func TestClusterSASLTokenAndAWS(t *testing.T) {
	t.Setenv("FERRY_TEST_TOKEN", "eyJ.token")
	cfg, err := loadCluster(t, nil, "    sasl:\n      mechanism: OAUTHBEARER\n      token: ${FERRY_TEST_TOKEN}\n      extensions:\n        logicalCluster: lkc-1\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Clusters[0].SASL; s.Token != "eyJ.token" || s.Extensions["logicalCluster"] != "lkc-1" {
		t.Errorf("sasl = %+v, want the token from the environment and the extension", s)
	}
	cfg, err = loadCluster(t, map[string]string{"tok": "  eyJ.file\n"}, "    sasl:\n      mechanism: OAUTHBEARER\n      token_file: tok\n")
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Clusters[0].SASL.TokenFile
	if tok, err := ReadToken(f); !filepath.IsAbs(f) || err != nil || tok != "eyJ.file" {
		t.Errorf("token file %s: ReadToken = %q, %v; want an absolute name and the token without white space", f, tok, err)
	}
	for _, aws := range []string{"", "      aws:\n        access_key_id: AKIAEXAMPLE\n        secret_access_key: s\n        session_token: t\n"} {
		if _, err := loadCluster(t, nil, "    sasl:\n      mechanism: AWS_MSK_IAM\n"+aws); err != nil {
			t.Errorf("AWS_MSK_IAM with %q: %v", aws, err)
		}
	}
}

func TestEmbeddedSecurity(t *testing.T) {
	const routes = "protos:\n  - files: [echo.proto]\nroutes:\n  - when:\n      - method: a.B/C\n    produce:\n      topic: t\n"
	for embedded, want := range map[string]string{
		"embedded:\n  tls:\n    cert_file: c.pem\n":                                                `f.yaml:2: embedded.tls.key_file: is required with embedded.tls.cert_file`,
		"embedded:\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n":                           `f.yaml:3: embedded.tls.cert_file: loading the certificate `,
		"embedded:\n  sasl:\n    mechanism: OAUTHBEARER\n    username: u\n    password: hunter2\n": `f.yaml:3: embedded.sasl.mechanism: "OAUTHBEARER" is not a mechanism of the embedded broker`,
		"embedded:\n  sasl:\n    mechanism: PLAIN\n    username: u\n":                              `f.yaml:2: embedded.sasl.password: is required with embedded.sasl.mechanism`,
		"embedded:\n  sasl:\n    password: hunter2\n":                                              `f.yaml:2: embedded.sasl.mechanism: is required with a username or password`,
	} {
		_, err := Parse("f.yaml", []byte(embedded+routes))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %s", embedded, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the password is in the error: %v", err)
		}
	}
	cfg, err := Parse(filepath.Join(t.TempDir(), "f.yaml"), []byte("embedded:\n  sasl: {mechanism: SCRAM-SHA-256, username: u, password: p}\n"+routes))
	if err != nil || cfg.Embedded.SASL.Username != "u" {
		t.Errorf("Parse = %+v, %v; want the embedded broker's user", cfg, err)
	}
}
