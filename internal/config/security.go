package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SASL mechanisms Ferry speaks to Kafka.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// resolve makes the TLS files' relative names absolute from dir, the
// config file's directory.
func (t *ClientTLS) resolve(dir string) {
	t.CAFile = resolvePath(dir, t.CAFile)
	t.CertFile = resolvePath(dir, t.CertFile)
	t.KeyFile = resolvePath(dir, t.KeyFile)
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
	t := cl.TLS
	if !t.Enabled {
		for key, val := range map[string]string{"ca_file": t.CAFile, "cert_file": t.CertFile, "key_file": t.KeyFile, "server_name": t.ServerName} {
			if val != "" {
				v.errf(p+".tls."+key, "is never used: set %s.tls.enabled: true", p)
			}
		}
	}
	if t.Enabled || cl.SASL.Mechanism != "" {
		if len(cl.Brokers) == 0 {
			v.errf(p+".brokers", "are needed for tls and sasl: the embedded broker speaks plaintext without SASL")
		}
	}
	if t.Enabled {
		if _, key, err := t.config(); err != nil {
			v.errf(p+".tls."+key, "%v", err)
		}
	}
	s := cl.SASL
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			v.errf(p+".sasl.mechanism", "is required with a username or password: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		v.errf(p+".sasl.mechanism", "%q is not a SASL mechanism: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
	if s.Username == "" {
		v.errf(p+".sasl.username", "is required with sasl.mechanism")
	}
	switch {
	case s.Password != "" && s.PasswordFile != "":
		v.errf(p+".sasl.password_file", "cannot go with sasl.password: set one of them")
	case s.Password == "" && s.PasswordFile == "":
		v.errf(p+".sasl.password", "is required with sasl.mechanism (or sasl.password_file)")
	case s.PasswordFile != "":
		if secret, err := s.Secret(); err != nil {
			v.errf(p+".sasl.password_file", "%v", err)
		} else if secret == "" {
			v.errf(p+".sasl.password_file", "%s is empty", s.PasswordFile)
		}
	}
}
