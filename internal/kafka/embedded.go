package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
)

// Embedded is the in-process broker that serves clusters with no brokers
// configured. It keeps every record in memory only, unless EmbeddedDataDir
// names a directory to keep them in across restarts.
type Embedded struct {
	c    *kfake.Cluster
	once sync.Once
	// closed is closed once the broker stopped and, with a data
	// directory, saved what it holds.
	closed chan struct{}
	// unlock releases the data directory once the broker saved it.
	unlock func()

	// security are the TLS and SASL options with which Ferry's own
	// clusters reach the broker, when it requires them.
	security []kgo.Opt
	saslAuth saslAuth
}

// EmbeddedOption configures the embedded broker.
type EmbeddedOption func(*embeddedOptions)

type embeddedOptions struct {
	logger *slog.Logger
	listen func(network, address string) (net.Listener, error)
	tls    config.EmbeddedTLS
	sasl   config.EmbeddedSASL
	dir    string
}

// EmbeddedLogger sets the logger of the broker's own problems, such as
// failing to accept a connection.
func EmbeddedLogger(l *slog.Logger) EmbeddedOption {
	return func(o *embeddedOptions) { o.logger = l }
}

// EmbeddedSecurity makes the broker speak TLS with the certificate of
// tls, when it names one, and require SASL authentication as the user of
// sasl, when it names a mechanism.
func EmbeddedSecurity(tls config.EmbeddedTLS, sasl config.EmbeddedSASL) EmbeddedOption {
	return func(o *embeddedOptions) { o.tls, o.sasl = tls, sasl }
}

// EmbeddedDataDir makes the broker keep its topics, records, groups and
// committed offsets in dir, which it creates if missing, and load them
// from there as it starts: a broker started again on the same directory
// serves what the last one held. Empty keeps everything in memory.
func EmbeddedDataDir(dir string) EmbeddedOption {
	return func(o *embeddedOptions) { o.dir = dir }
}

// StartEmbedded starts the in-memory broker on 127.0.0.1:port (0 picks a
// free port). Topics are created on first use with the given partitions.
func StartEmbedded(port, partitions int, opts ...EmbeddedOption) (*Embedded, error) {
	o := embeddedOptions{logger: slog.New(slog.DiscardHandler), listen: net.Listen}
	for _, opt := range opts {
		opt(&o)
	}
	e := &Embedded{saslAuth: saslAuth{check: func(context.Context) error { return nil }}, closed: make(chan struct{}), unlock: func() {}}
	kopts, err := e.secure(o)
	if err != nil {
		return nil, err
	}
	if o.dir != "" {
		if e.unlock, err = lockDataDir(o.dir); err != nil {
			return nil, fmt.Errorf("embedded broker's data in %s: %w", o.dir, err)
		}
		kopts = append(kopts, kfake.DataDir(o.dir))
	}
	c, err := kfake.NewCluster(append(kopts,
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
		kfake.ClusterID("ferry-embedded"),
		// kfake stops accepting at the first Accept error; the listener
		// retries instead, so the broker survives running out of file
		// descriptors for a moment.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			l, err := o.listen(network, address)
			if err != nil {
				return nil, err
			}
			return newRetryListener(l, o.logger), nil
		}),
	)...)
	if err != nil {
		e.unlock()
		if o.dir != "" {
			return nil, fmt.Errorf("starting embedded broker on 127.0.0.1:%d with data in %s: %w", port, o.dir, err)
		}
		return nil, fmt.Errorf("starting embedded broker on 127.0.0.1:%d: %w", port, err)
	}
	e.c = c
	return e, nil
}

// secure returns the broker's TLS and SASL options, and sets up those of
// the clients of Ferry's clusters it serves.
func (e *Embedded) secure(o embeddedOptions) ([]kfake.Opt, error) {
	var kopts []kfake.Opt
	cert, ok, err := o.tls.Certificate()
	if err != nil {
		return nil, fmt.Errorf("embedded.tls: %w", err)
	}
	if ok {
		kopts = append(kopts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
		e.security = append(e.security, kgo.DialTLSConfig(pinnedTLS(cert.Certificate[0])))
	}
	if s := o.sasl; s.Mechanism != "" {
		kopts = append(kopts, kfake.EnableSASL(), kfake.Superuser(s.Mechanism, s.Username, s.Password))
		a, err := saslMechanism(config.ClusterSASL{Mechanism: s.Mechanism, Username: s.Username, Password: s.Password}, o.logger)
		if err != nil {
			return nil, fmt.Errorf("embedded.sasl: %w", err)
		}
		e.saslAuth = a
		e.security = append(e.security, kgo.SASL(a.mech))
	}
	return kopts, nil
}

// pinnedTLS is the TLS of a client of the embedded broker: it accepts the
// broker's own certificate, whoever signed it and whatever name it bears,
// and no other.
func pinnedTLS(leaf []byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The check is VerifyPeerCertificate's: the one certificate
		// Ferry loaded itself, byte for byte.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], leaf) {
				return errors.New("the broker's certificate is not the embedded broker's (embedded.tls.cert_file)")
			}
			return nil
		},
	}
}

// Cluster prepares a cluster served by this broker, as NewCluster does,
// reaching it with the broker's own TLS and SASL settings.
func (e *Embedded) Cluster(cfg config.Cluster, logger *slog.Logger) *Cluster {
	c := NewCluster(cfg, e.Addrs(), logger)
	if c.securityErr == nil {
		c.security, c.saslCheck = e.security, e.saslAuth.check
	}
	return c
}

// Addrs returns the broker addresses, for Ferry's clients and for any
// outside client such as kcat.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Fake returns the kfake cluster behind the broker, for tests that inject
// faults with its control functions.
func (e *Embedded) Fake() *kfake.Cluster { return e.c }

// Close stops the broker. In memory, its records are gone; with a data
// directory, it first writes what it holds there. When ctx ends before
// that is done, Close stops waiting and says so (the broker goes on
// writing until the process exits). It is safe to call more than once.
func (e *Embedded) Close(ctx context.Context) error {
	e.once.Do(func() {
		go func() {
			defer close(e.closed)
			e.c.Close()
			e.unlock()
		}()
	})
	select {
	case <-e.closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("abandoning the embedded broker while it saves its data: %w", ctx.Err())
	}
}
