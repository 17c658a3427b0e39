package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// SASL mechanisms Ferry speaks to Kafka.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
	SASLOAuthBearer = "OAUTHBEARER"
	SASLAWSMSKIAM   = "AWS_MSK_IAM"
)

// saslMechanisms lists the mechanisms for error messages.
const saslMechanisms = "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM"

// resolve makes the TLS files' relative names absolute from dir, the
// config file's directory.
func (t *ClientTLS) resolve(dir string) {
	t.CAFile = resolvePath(dir, t.CAFile)
	t.CertFile = resolvePath(dir, t.CertFile)
	t.KeyFile = resolvePath(dir, t.KeyFile)
}

// resolve makes the SASL files' relative names absolute from dir, the
// config file's directory.
func (s *ClusterSASL) resolve(dir string) {
	s.PasswordFile = resolvePath(dir, s.PasswordFile)
	s.TokenFile = resolvePath(dir, s.TokenFile)
}

func resolvePath(dir, name string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

// Config returns the TLS configuration for the servers Ferry connects to,
// reading the CA file and the client certificate; nil when TLS is off. Errors name the
// file and what is wrong with it, never its contents.
func (t ClientTLS) Config() (*tls.Config, error) {
	c, _, err := t.config()
	return c, err
}

// config is Config, and also says which key an error is about.
func (t ClientTLS) config() (*tls.Config, string, error) {
	if !t.Enabled {
		return nil, "", nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, // documented as for tests only, and logged
	}
	if t.CAFile != "" {
		pool, err := readCertPool(t.CAFile, "CA file")
		if err != nil {
			return nil, "ca_file", err
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, "cert_file", fmt.Errorf("loading the client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	case t.CertFile != "":
		return nil, "key_file", errors.New("cert_file needs key_file, the client certificate's key")
	case t.KeyFile != "":
		return nil, "cert_file", errors.New("key_file needs cert_file, the client certificate")
	}
	return c, "", nil
}

// readCertPool reads a PEM file of certificate authorities; what names
// the file in errors.
func readCertPool(name, what string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the %s %s holds no PEM certificate", what, name)
	}
	return pool, nil
}

// Secret returns the SASL password: Password, or the contents of
// PasswordFile without a trailing newline. Errors never hold the password.
func (s ClusterSASL) Secret() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("reading the password file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// clusterSecurity checks a cluster's tls and sasl sections, reading the
// files they name so that `ferry validate` finds a missing or broken one.
func (v *validator) clusterSecurity(p string, cl Cluster) {
	v.clientTLS(p+".tls", cl.TLS)
	if (cl.TLS.Enabled || cl.SASL.Mechanism != "") && len(cl.Brokers) == 0 {
		v.errf(p+".brokers", "are needed for tls and sasl: a cluster served by the embedded broker reaches it with embedded.tls and embedded.sasl")
	}
	v.clusterSASL(p+".sasl", cl.SASL)
}

// clusterSASL checks a cluster's sasl section, at path p: the keys its
// mechanism needs are set, and no other.
func (v *validator) clusterSASL(p string, s ClusterSASL) {
	// set lists the keys given, in the order of the reference.
	var set []string
	for _, kv := range []struct {
		key string
		on  bool
	}{
		{"username", s.Username != ""}, {"password", s.Password != ""}, {"password_file", s.PasswordFile != ""},
		{"token", s.Token != ""}, {"token_file", s.TokenFile != ""}, {"extensions", len(s.Extensions) > 0},
		{"aws", s.AWS != AWSCredentials{}},
	} {
		if kv.on {
			set = append(set, kv.key)
		}
	}
	// only reports the keys set that mechanism does not use.
	only := func(keys ...string) {
		for _, k := range set {
			if !slices.Contains(keys, k) {
				v.errf(p+"."+k, "is not used by sasl.mechanism %s", s.Mechanism)
			}
		}
	}
	switch s.Mechanism {
	case "":
		switch {
		case s.Username != "" || s.Password != "" || s.PasswordFile != "":
			v.errf(p+".mechanism", "is required with a username or password: use %s", saslMechanisms)
		case len(set) > 0:
			v.errf(p+".mechanism", "is required with sasl.%s: use %s", set[0], saslMechanisms)
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		only("username", "password", "password_file")
		v.saslPassword(p, s)
	case SASLOAuthBearer:
		only("token", "token_file", "extensions")
		v.saslToken(p, s)
	case SASLAWSMSKIAM:
		only("aws")
		switch a := s.AWS; {
		case a.AccessKeyID != "" && a.SecretAccessKey == "":
			v.errf(p+".aws.secret_access_key", "is required with aws.access_key_id")
		case a.AccessKeyID == "" && a.SecretAccessKey != "":
			v.errf(p+".aws.access_key_id", "is required with aws.secret_access_key")
		case a.AccessKeyID == "" && a.SessionToken != "":
			v.errf(p+".aws.session_token", "needs aws.access_key_id and aws.secret_access_key")
		}
	default:
		v.errf(p+".mechanism", "%q is not a SASL mechanism: use %s", s.Mechanism, saslMechanisms)
	}
}

// saslPassword checks the user and password of PLAIN and SCRAM.
func (v *validator) saslPassword(p string, s ClusterSASL) {
	if s.Username == "" {
		v.errf(p+".username", "is required with sasl.mechanism %s", s.Mechanism)
	}
	switch {
	case s.Password != "" && s.PasswordFile != "":
		v.errf(p+".password_file", "cannot go with sasl.password: set one of them")
	case s.Password == "" && s.PasswordFile == "":
		v.errf(p+".password", "is required with sasl.mechanism %s (or sasl.password_file)", s.Mechanism)
	case s.PasswordFile != "":
		if secret, err := s.Secret(); err != nil {
			v.errf(p+".password_file", "%v", err)
		} else if secret == "" {
			v.errf(p+".password_file", "%s is empty", s.PasswordFile)
		}
	}
}

// saslToken checks the token and extensions of OAUTHBEARER.
func (v *validator) saslToken(p string, s ClusterSASL) {
	switch {
	case s.Token != "" && s.TokenFile != "":
		v.errf(p+".token_file", "cannot go with sasl.token: set one of them")
	case s.Token == "" && s.TokenFile == "":
		v.errf(p+".token", "is required with sasl.mechanism OAUTHBEARER (or sasl.token_file)")
	case s.TokenFile != "":
		if _, err := ReadToken(s.TokenFile); err != nil {
			v.errf(p+".token_file", "%v", err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Extensions)) {
		switch {
		case k == "auth":
			v.errf(p+".extensions."+k, "is reserved for the token")
		case !saslExtensionKey(k):
			v.errf(p+".extensions", "key %q: use letters only (RFC 7628)", k)
		case strings.ContainsRune(s.Extensions[k], '\x01'):
			v.errf(p+".extensions."+k, "holds the control character 0x01, which ends a SASL extension")
		}
	}
}

// saslExtensionKey reports whether k is an OAUTHBEARER extension key: one
// or more ASCII letters.
func saslExtensionKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return false
		}
	}
	return true
}

// ReadToken reads an OAUTHBEARER token file: its contents without
// surrounding white space. An empty file is an error. Errors never hold
// the token.
func ReadToken(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the token file %s is empty", name)
	}
	return tok, nil
}

// resolve makes the embedded broker's file names absolute from dir, the
// config file's directory.
func (t *EmbeddedTLS) resolve(dir string) {
	t.CertFile = resolvePath(dir, t.CertFile)
	t.KeyFile = resolvePath(dir, t.KeyFile)
}

// Certificate loads the embedded broker's certificate; ok is false when TLS
// is off.
func (t EmbeddedTLS) Certificate() (cert tls.Certificate, ok bool, err error) {
	if t.CertFile == "" && t.KeyFile == "" {
		return tls.Certificate{}, false, nil
	}
	cert, err = tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("loading the certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
	}
	return cert, true, nil
}

// embeddedSecurity checks the embedded broker's tls and sasl sections, and
// that its data_dir, when it exists, is a directory.
func (v *validator) embeddedSecurity() {
	if d := v.cfg.Embedded.DataDir; d != "" {
		if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
			v.errf("embedded.data_dir", "%s is not a directory: name a directory, which the embedded broker creates if it is missing", d)
		}
	}
	t, s := v.cfg.Embedded.TLS, v.cfg.Embedded.SASL
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.errf("embedded.tls.key_file", "is required with embedded.tls.cert_file")
	case t.CertFile == "" && t.KeyFile != "":
		v.errf("embedded.tls.cert_file", "is required with embedded.tls.key_file")
	default:
		if _, _, err := t.Certificate(); err != nil {
			v.errf("embedded.tls.cert_file", "%v", err)
		}
	}
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" {
			v.errf("embedded.sasl.mechanism", "is required with a username or password: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		v.errf("embedded.sasl.mechanism", "%q is not a mechanism of the embedded broker: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
	if s.Username == "" {
		v.errf("embedded.sasl.username", "is required with embedded.sasl.mechanism")
	}
	if s.Password == "" {
		v.errf("embedded.sasl.password", "is required with embedded.sasl.mechanism")
	}
}

// ClientTLS is how Ferry speaks TLS as a client, to any server it connects
// to: a cluster's brokers, or a back end's gRPC server. Relative file names
// are taken from the config file's directory.
type ClientTLS struct {
	// Enabled turns TLS on; the other keys need it.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the certificate authorities that sign the
	// servers' certificates. Empty: the system's pool.
	CAFile string `yaml:"ca_file"`
	// CertFile is Ferry's client certificate, in PEM, for servers that
	// require client certificates (mTLS). Set with KeyFile, or neither.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the private key of CertFile, in PEM.
	KeyFile string `yaml:"key_file"`
	// ServerName is the name the servers' certificates are checked
	// against. Empty: the host of the address Ferry connects to.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// ClusterSASL is how Ferry authenticates to a cluster's brokers.
type ClusterSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or
	// AWS_MSK_IAM. Empty: no SASL.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user of PLAIN and SCRAM.
	Username string `yaml:"username"`
	// Password is the user's password. Exactly one of Password and
	// PasswordFile is set.
	Password string `yaml:"password"`
	// PasswordFile names a file holding the password, read at start; a
	// trailing newline is dropped.
	PasswordFile string `yaml:"password_file"`
	// Token is the bearer token of OAUTHBEARER. Exactly one of Token and
	// TokenFile is set.
	Token string `yaml:"token"`
	// TokenFile names a file holding the OAUTHBEARER token, read again at
	// every authentication so that another process can renew it.
	TokenFile string `yaml:"token_file"`
	// Extensions are OAUTHBEARER's SASL extensions (RFC 7628), such as
	// Confluent Cloud's logicalCluster and identityPoolId.
	Extensions map[string]string `yaml:"extensions"`
	// AWS holds the credentials of AWS_MSK_IAM. Empty: the AWS SDK's
	// default credential chain.
	AWS AWSCredentials `yaml:"aws"`
}

// AWSCredentials are static AWS credentials. Set AccessKeyID and
// SecretAccessKey together, or neither.
type AWSCredentials struct {
	// AccessKeyID is the access key's id, such as AKIA….
	AccessKeyID string `yaml:"access_key_id"`
	// SecretAccessKey is the access key's secret.
	SecretAccessKey string `yaml:"secret_access_key"`
	// SessionToken is the token of temporary credentials.
	SessionToken string `yaml:"session_token"`
}

// EmbeddedTLS is the embedded broker's certificate. TLS is on when both
// files are set. Relative file names are taken from the config file's
// directory.
type EmbeddedTLS struct {
	// CertFile is the broker's certificate chain (PEM), leaf first.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the private key of CertFile (PEM).
	KeyFile string `yaml:"key_file"`
}

// EmbeddedSASL is the one user the embedded broker lets in.
type EmbeddedSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Empty: no SASL.
	Mechanism string `yaml:"mechanism"`
	// Username is the user's name.
	Username string `yaml:"username"`
	// Password is the user's password.
	Password string `yaml:"password"`
}
