package config

// AdminListener is the operators' HTTP listener: Prometheus metrics,
// liveness and readiness, and optionally Go's profiler. It serves no
// caller's traffic and passes no edge chain.
type AdminListener struct {
	// Address is host:port to listen on. Empty serves no admin listener.
	Address string `yaml:"address"`
	// PProf serves Go's profiler under /debug/pprof/. Profiles show
	// memory, which may hold records and credentials: keep the listener
	// on a private address when it is on.
	PProf bool `yaml:"pprof"`
}

// Metrics configures what Ferry measures for Prometheus.
type Metrics struct {
	// Enabled counts every call of every face (the edge chain's metrics
	// interceptor) and measures the Kafka clients, when the admin listener
	// runs to serve them. The state of the back
	// ends, fetch hubs and reply caches, read when scraped, is served
	// whenever the admin listener runs.
	Enabled bool `yaml:"enabled"`
}

// DefaultAdminAddress is where the admin listener serves by default.
const DefaultAdminAddress = "127.0.0.1:7159"

// admin checks the admin listener.
func (v *validator) admin() {
	a := v.cfg.Listeners.Admin
	if a.Address == "" {
		if a.PProf {
			v.errf("listeners.admin.pprof", "needs listeners.admin.address: the profiler is served on the admin listener")
		}
		return
	}
	if err := checkHostPort(a.Address); err != nil {
		v.errf("listeners.admin.address", "%v", err)
	}
}
