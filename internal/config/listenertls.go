package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ListenerTLS is how a listener of Ferry speaks TLS to its clients. TLS is
// on when CertFile and KeyFile are set; plaintext otherwise. Relative file
// names are taken from the config file's directory.
type ListenerTLS struct {
	// CertFile is the server certificate chain, in PEM. It is read again
	// when it changes on disk, so a rotated certificate needs no restart.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the private key of CertFile, in PEM.
	KeyFile string `yaml:"key_file"`
	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3".
	// Default: "1.2".
	MinVersion string `yaml:"min_version"`
	// ClientAuth is what Ferry asks of a client's certificate: none,
	// request (checked when sent) or require (mTLS). Default: none.
	ClientAuth string `yaml:"client_auth"`
	// ClientCAFile is a PEM file of the certificate authorities that sign
	// client certificates; required with request and require.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listener speaks TLS.
func (t ListenerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Client certificate modes of ListenerTLS.ClientAuth.
const (
	ClientAuthNone    = "none"
	ClientAuthRequest = "request"
	ClientAuthRequire = "require"
)

var defaultListenerTLS = ListenerTLS{MinVersion: "1.2", ClientAuth: ClientAuthNone}

// resolve makes the TLS files' relative names absolute from dir, the
// config file's directory.
func (t *ListenerTLS) resolve(dir string) {
	t.CertFile = resolvePath(dir, t.CertFile)
	t.KeyFile = resolvePath(dir, t.KeyFile)
	t.ClientCAFile = resolvePath(dir, t.ClientCAFile)
}

// ServerConfig returns the TLS configuration of the listener; nil when
// TLS is off. The certificate and key are read now, and again when either
// file changes on disk (looked at no more than once a second), so a rotated
// pair is served without a restart. A pair that does not load is logged
// once, and the last good one stays in use.
func (t ListenerTLS) ServerConfig(logger *slog.Logger) (*tls.Config, error) {
	c, _, err := t.serverConfig(logger)
	return c, err
}

// serverConfig is ServerConfig, and also says which key an error is about.
func (t ListenerTLS) serverConfig(logger *slog.Logger) (*tls.Config, string, error) {
	if !t.Enabled() {
		return nil, "", nil
	}
	switch {
	case t.CertFile == "":
		return nil, "cert_file", errors.New("is required with key_file: the server certificate")
	case t.KeyFile == "":
		return nil, "key_file", errors.New("is required with cert_file: the server certificate's key")
	}
	c := &tls.Config{}
	switch t.MinVersion {
	case "1.2", "":
		c.MinVersion = tls.VersionTLS12
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, "min_version", fmt.Errorf("%q is not a TLS version: use \"1.2\" or \"1.3\"", t.MinVersion)
	}
	switch t.ClientAuth {
	case ClientAuthNone, "":
		c.ClientAuth = tls.NoClientCert
	case ClientAuthRequest:
		c.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		c.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, "client_auth", fmt.Errorf("%q is not a client certificate mode: use none, request or require", t.ClientAuth)
	}
	if t.ClientCAFile != "" {
		pool, err := readCertPool(t.ClientCAFile, "client CA file")
		if err != nil {
			return nil, "client_ca_file", err
		}
		c.ClientCAs = pool
	} else if c.ClientAuth != tls.NoClientCert {
		return nil, "client_ca_file", fmt.Errorf("is required with client_auth: %s, to check client certificates", t.ClientAuth)
	}
	kp := &keyPair{certFile: t.CertFile, keyFile: t.KeyFile, logger: logger}
	if err := kp.load(); err != nil {
		return nil, "cert_file", err
	}
	c.GetCertificate = kp.get
	return c, "", nil
}

// listenerTLS checks a listener's tls section, reading the files it names
// so that `ferry validate` finds a missing or broken one.
func (v *validator) listenerTLS(p string, t ListenerTLS) {
	if !t.Enabled() {
		if t.ClientCAFile != "" {
			v.errf(p+".client_ca_file", "is never used: set %s.cert_file and key_file to serve TLS", p)
		}
		if t.ClientAuth != ClientAuthNone && t.ClientAuth != "" {
			v.errf(p+".client_auth", "is never used: set %s.cert_file and key_file to serve TLS", p)
		}
		return
	}
	if _, key, err := t.serverConfig(nil); err != nil {
		v.errf(p+"."+key, "%v", err)
	}
}

// checkEvery is how often keyPair looks at its files' modification times.
const checkEvery = time.Second

// keyPair is a server certificate read from its files, and read again
// when they change.
type keyPair struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	checked  time.Time // when the files' times were last looked at
	modTimes [2]time.Time
	failed   [2]time.Time // the times of the pair that last failed, logged once
}

// stat returns the modification times of the certificate and key files.
func (k *keyPair) stat() ([2]time.Time, error) {
	var times [2]time.Time
	for i, name := range []string{k.certFile, k.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return times, err
		}
		times[i] = fi.ModTime()
	}
	return times, nil
}

// load reads the pair; the caller holds mu, or is the only user.
func (k *keyPair) load() error {
	times, err := k.stat()
	if err == nil {
		var cert tls.Certificate
		cert, err = tls.LoadX509KeyPair(k.certFile, k.keyFile)
		if err == nil {
			k.cert, k.modTimes = &cert, times
			return nil
		}
	}
	return fmt.Errorf("loading the server certificate %s with key %s: %w", k.certFile, k.keyFile, err)
}

// get returns the current certificate, reloading it first when a file
// changed since it was read.
func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := time.Now(); now.Sub(k.checked) >= checkEvery {
		k.checked = now
		times, err := k.stat()
		if err == nil && times != k.modTimes && times != k.failed {
			if err := k.load(); err != nil {
				k.failed = times
				if k.logger != nil {
					k.logger.Error("keeping the previous TLS certificate: the new one does not load", "error", err)
				}
			} else if k.logger != nil {
				k.logger.Info("loaded a new TLS certificate", "cert_file", k.certFile)
			}
		}
	}
	return k.cert, nil
}
