package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is the in-process broker that serves clusters with no brokers
// configured. It keeps every record in memory only.
type Embedded struct {
	c    *kfake.Cluster
	once sync.Once
}

// EmbeddedOption configures the embedded broker.
type EmbeddedOption func(*embeddedOptions)

type embeddedOptions struct {
	logger *slog.Logger
	listen func(network, address string) (net.Listener, error)
}

// EmbeddedLogger sets the logger of the broker's own problems, such as
// failing to accept a connection.
func EmbeddedLogger(l *slog.Logger) EmbeddedOption {
	return func(o *embeddedOptions) { o.logger = l }
}

// StartEmbedded starts the in-memory broker on 127.0.0.1:port (0 picks a
// free port). Topics are created on first use with the given partitions.
func StartEmbedded(port, partitions int, opts ...EmbeddedOption) (*Embedded, error) {
	o := embeddedOptions{logger: slog.New(slog.DiscardHandler), listen: net.Listen}
	for _, opt := range opts {
		opt(&o)
	}
	c, err := kfake.NewCluster(
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
	)
	if err != nil {
		return nil, fmt.Errorf("starting embedded broker on 127.0.0.1:%d: %w", port, err)
	}
	return &Embedded{c: c}, nil
}

// Addrs returns the broker addresses, for Ferry's clients and for any
// outside client such as kcat.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Close stops the broker; its records are gone. Nothing of it is left to
// wait for, so ctx is not used. It is safe to call more than once.
func (e *Embedded) Close(context.Context) error {
	e.once.Do(e.c.Close)
	return nil
}
