package config

import (
	"net"
	"strconv"
)

// Tracing exports OpenTelemetry traces of the calls Ferry serves and makes,
// and carries their context across Kafka in record headers. It is off by
// default: then Ferry starts no span and adds no header.
type Tracing struct {
	// Enabled turns tracing on.
	Enabled bool `yaml:"enabled"`
	// OTLPEndpoint is the host:port of the OTLP gRPC receiver spans are
	// exported to (an OpenTelemetry Collector, Jaeger, Tempo ...).
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Insecure exports over plaintext; off, the connection uses TLS with
	// the system's roots.
	Insecure bool `yaml:"insecure"`
	// SamplePerMillion is how many of a million traces that start at
	// Ferry are sampled. A trace a caller started keeps the caller's
	// decision.
	SamplePerMillion int `yaml:"sample_per_million"`
	// ServiceName is the service.name of the exported spans.
	ServiceName string `yaml:"service_name"`
}

// defaultTracing is the tracing section every file is decoded onto.
var defaultTracing = Tracing{
	OTLPEndpoint:     "127.0.0.1:4317",
	Insecure:         true,
	SamplePerMillion: 1_000_000,
	ServiceName:      "ferry",
}

// tracing checks the tracing section; its sample rate is a range.
func (v *validator) tracing() {
	t := v.cfg.Tracing
	if !t.Enabled {
		return
	}
	if host, port, err := net.SplitHostPort(t.OTLPEndpoint); err != nil || host == "" {
		v.errf("tracing.otlp_endpoint", "%q is not host:port: name the OTLP gRPC receiver, such as 127.0.0.1:4317", t.OTLPEndpoint)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.errf("tracing.otlp_endpoint", "%q has no valid port: name the OTLP gRPC receiver, such as 127.0.0.1:4317", t.OTLPEndpoint)
	}
	if t.ServiceName == "" {
		v.errf("tracing.service_name", "is required: spans are exported under it")
	}
}
