package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
)

// securityOpts turns a cluster's tls and sasl sections into franz-go
// options: a TLS dialer and a SASL mechanism. It reads the files they
// name. check, never nil, tests what SASL authenticates with before any
// broker is dialed.
func securityOpts(cfg config.Cluster, logger *slog.Logger) (opts []kgo.Opt, check func(context.Context) error, err error) {
	check = func(context.Context) error { return nil }
	tc, err := cfg.TLS.Config()
	if err != nil {
		return nil, check, fmt.Errorf("clusters[].tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if cfg.SASL.Mechanism == "" {
		return opts, check, nil
	}
	a, err := saslMechanism(cfg.SASL, logger)
	if err != nil {
		return nil, check, err
	}
	return append(opts, kgo.SASL(a.mech)), a.check, nil
}

// startError says why the check at start-up could not reach the cluster,
// with what to look at in the configuration when the cause is TLS or SASL.
func (c *Cluster) startError(err error) error {
	if hint := c.securityHint(err); hint != "" {
		return fmt.Errorf("cluster %q at %v: %s: %w", c.name, c.seeds, hint, err)
	}
	return fmt.Errorf("reaching cluster %q at %v: %w", c.name, c.seeds, err)
}

// securityHint names the likely cause of a failed connection when it is
// the cluster's TLS or SASL settings, or returns "".
func (c *Cluster) securityHint(err error) string {
	wrongPassword := "SASL authentication failed (wrong username or password? clusters[].sasl)"
	switch c.cfg.SASL.Mechanism {
	case config.SASLOAuthBearer:
		wrongPassword = "SASL authentication failed (token expired, or not accepted by the brokers? clusters[].sasl.token)"
	case config.SASLAWSMSKIAM:
		wrongPassword = "SASL authentication failed (do the AWS credentials allow kafka-cluster:Connect? clusters[].sasl.aws)"
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		notTLS    tls.RecordHeaderError
		op        *net.OpError
		firstEOF  *kgo.ErrFirstReadEOF
	)
	tlsOn, saslOn := c.cfg.TLS.Enabled, c.cfg.SASL.Mechanism != ""
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return wrongPassword
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Sprintf("the brokers do not offer SASL mechanism %s (clusters[].sasl.mechanism?)", c.cfg.SASL.Mechanism)
	case errors.As(err, &unknownCA):
		return "TLS handshake failed: certificate signed by unknown authority (clusters[].tls.ca_file?)"
	case errors.As(err, &hostname):
		return "TLS handshake failed: the broker's certificate is not for this address (clusters[].tls.server_name?)"
	case errors.As(err, &invalid):
		return "TLS handshake failed: the broker's certificate is not valid (expired, or not a server certificate?)"
	case errors.As(err, &notTLS):
		return "TLS handshake failed: the broker does not speak TLS (clusters[].tls.enabled?)"
	case !tlsOn && strings.Contains(err.Error(), "appear to be a tls alert record"):
		// A TLS broker answers a plaintext request with a TLS alert, which
		// franz-go reports only in its error's text.
		return "the broker answered with a TLS alert: it speaks TLS (clusters[].tls.enabled?)"
	case errors.As(err, &op) && op.Op == "remote error" && c.cfg.TLS.CertFile != "":
		return "the broker refused the TLS handshake: it does not accept Ferry's client certificate (is it signed by a CA the broker trusts? clusters[].tls.cert_file and key_file)"
	case errors.As(err, &op) && op.Op == "remote error":
		return "the broker refused the TLS handshake (does it require a client certificate? clusters[].tls.cert_file and key_file)"
	case errors.As(err, &firstEOF):
		switch {
		case tlsOn && !saslOn && strings.Contains(firstEOF.Error(), "SASL is required"):
			// franz-go tells a close after the handshake's first request
			// from one during it.
			return "the broker closed the connection after the TLS handshake: does it require SASL? (clusters[].sasl?)"
		case tlsOn:
			return "the broker closed the connection at the TLS handshake: does it speak TLS? (clusters[].tls.enabled?)"
		case saslOn:
			return "the broker closed the connection: does it require TLS? (clusters[].tls.enabled?)"
		}
		return "the broker closed the connection: does it require TLS or SASL? (clusters[].tls.enabled? clusters[].sasl?)"
	case saslOn && errors.Is(err, io.EOF):
		// Some brokers close the connection on a failed authentication
		// rather than answer it.
		return wrongPassword
	case tlsOn && errors.Is(err, context.DeadlineExceeded):
		// A broker that does not speak TLS takes the client's hello for
		// the start of a large request, and waits for the rest of it.
		return fmt.Sprintf("no TLS answer within dial_timeout (%v): does the broker speak TLS? (clusters[].tls.enabled?)", c.cfg.DialTimeout)
	}
	return ""
}

// SecurityOpts returns the franz-go options of a cluster's tls and sasl
// sections (a TLS dialer, a SASL mechanism), for a client made outside a
// Cluster, such as a test's own producer.
func SecurityOpts(cfg config.Cluster) ([]kgo.Opt, error) {
	opts, _, err := securityOpts(cfg, slog.New(slog.DiscardHandler))
	return opts, err
}
