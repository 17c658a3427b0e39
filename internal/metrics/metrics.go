// Package metrics is Ferry's Prometheus registry and what fills it: the
// edge chain's interceptor that counts every call of every face
// (Registry.Calls), franz-go hooks that measure each cluster's Kafka
// clients (Registry.KafkaHook), and a collector that reads, when scraped,
// what the components already count (Registry.Watch). The registry is
// Ferry's own, never Prometheus' global one, so two Ferry instances in one
// process (tests) do not collide.
//
// Labels are bounded: the face, the configured route name, the gRPC method
// (one of the loaded ones, else "unknown") or the REST route pattern, the
// code, the cluster and back end names. Never keys, ids or names a caller
// chooses.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace starts the name of every metric Ferry defines.
const namespace = "ferry"

// Registry is one Ferry instance's metrics.
type Registry struct {
	reg    *prometheus.Registry
	routes routes
}

// New returns a registry holding the Go runtime's and the process'
// collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{reg: reg}
}

// Handler serves the registry in Prometheus' exposition formats.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Gatherer returns the registry, for tests and other exporters.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }
