package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"sync"
	"time"

	"github.com/ferryproxy/ferry/internal/kafkaapi"
	"github.com/ferryproxy/ferry/internal/metrics"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// admin is the admin listener as a component of App: /metrics, /healthz,
// /readyz and, with listeners.admin.pprof, /debug/pprof/. It starts with
// the servers and stops after them, so that it reports through a
// shutdown. Its requests pass no edge chain: they are the operators', not
// callers'.
type admin struct {
	a   *App
	lis net.Listener
	srv *http.Server
	// serving is the Serve goroutine, which Close waits for; not App's
	// serving, which the servers wait for before the admin listener stops.
	serving sync.WaitGroup
}

// newMetrics returns the App's registry, nil without an admin listener:
// nothing would read what it counts.
func newMetrics(a *App) *metrics.Registry {
	if a.cfg.Listeners.Admin.Address == "" {
		return nil
	}
	return metrics.New()
}

// measuring reports whether calls and Kafka clients are measured:
// metrics.enabled, with an admin listener to serve them.
func (a *App) measuring() bool { return a.metrics != nil && a.cfg.Metrics.Enabled }

// knowMethods notes the gRPC methods Ferry serves and calls: those of the
// loaded protos and of the gRPC server's own services. Other names are
// the caller's choice, and count as one method in the metrics. Start runs
// it before the servers start, Reload with the protos it loaded: calls
// read the set of the moment. A method a reload took away keeps its
// series, which the metrics resolved once.
func (a *App) knowMethods(reg *protoreg.Registry) {
	methods := map[string]bool{}
	for _, sd := range reg.Services() {
		ms := sd.Methods()
		for i := range ms.Len() {
			methods["/"+string(sd.FullName())+"/"+string(ms.Get(i).Name())] = true
		}
	}
	for name, info := range a.server.GRPC().GetServiceInfo() {
		for _, m := range info.Methods {
			methods["/"+name+"/"+m.Name] = true
		}
	}
	a.methods.Store(&methods)
}

// knownMethod reports whether m is one of the methods knowMethods noted.
func (a *App) knownMethod(m string) bool {
	methods := a.methods.Load()
	return methods != nil && (*methods)[m]
}

// startAdmin listens on listeners.admin.address and serves the admin
// endpoints; nothing when the address is empty.
func (a *App) startAdmin(ctx context.Context) error {
	ac := a.cfg.Listeners.Admin
	if ac.Address == "" {
		return nil
	}
	a.metrics.Watch(metrics.Sources{
		Backends:         a.BackendStats,
		Fetch:            a.FetchStats,
		FetchCounts:      a.hubs.Counts,
		FetchCaches:      a.hubs.Caches,
		PendingReplies:   a.PendingReplies,
		CachedReplyBytes: a.CachedReplyBytes,
		KafkaAPIMembers: func() int {
			if a.kafkaAPI == nil {
				return 0
			}
			return a.kafkaAPI.Members()
		},
		KafkaAPICounts: func() map[string]kafkaapi.Counts {
			if a.kafkaAPI == nil {
				return nil
			}
			return a.kafkaAPI.Counts()
		},
		KafkaAPILag: func() map[string]kafkaapi.Lag {
			if a.kafkaAPI == nil {
				return nil
			}
			return a.kafkaAPI.Lag()
		},
		FetchGroupMembers: a.groups.Members,
		FetchGroupCounts:  a.groups.Counts,
		FetchGroupLag:     a.groups.Lag,
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", a.serveReady)
	mux.HandleFunc("GET /sources", a.serveSources)
	if ac.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	lis, err := net.Listen("tcp", ac.Address)
	if err != nil {
		return fmt.Errorf("listening for the admin endpoints on %s (listeners.admin.address): %w", ac.Address, err)
	}
	ad := &admin{a: a, lis: lis, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}}
	a.adminLis = lis
	return a.add(ctx, "the admin listener", ad)
}

// AdminAddr returns the address the admin listener listens on, or "" when
// it does not run.
func (a *App) AdminAddr() string {
	if a.adminLis == nil {
		return ""
	}
	return a.adminLis.Addr().String()
}

// Start serves the admin endpoints on a goroutine Close waits for.
func (ad *admin) Start(context.Context) error {
	a := ad.a
	ad.serving.Go(func() {
		if err := ad.srv.Serve(ad.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("admin listener failed", "error", err)
		}
	})
	a.logger.Info("serving the admin endpoints", "address", ad.lis.Addr().String(), "metrics", a.cfg.Metrics.Enabled, "pprof", a.cfg.Listeners.Admin.PProf)
	return nil
}

// Close stops the admin listener within ctx (its requests are short) and
// waits for its Serve goroutine.
func (ad *admin) Close(ctx context.Context) error {
	defer ad.serving.Wait()
	if err := ad.srv.Shutdown(ctx); err != nil {
		ad.srv.Close()
		return fmt.Errorf("closing the admin connections still open: %w", err)
	}
	return nil
}

// readiness is /readyz's answer.
type readiness struct {
	Ready bool `json:"ready"`
	// NotReady says, in words, what is not ready.
	NotReady []string `json:"not_ready,omitempty"`
}

// ready tells whether Ferry serves: every cluster is reachable (its
// health check), the routes are loaded, and every back end joined its
// group.
func (a *App) ready() readiness {
	var r readiness
	if !a.started.Load() {
		r.NotReady = append(r.NotReady, "Ferry is starting: the routes are not all loaded")
	}
	if a.Stopping() {
		r.NotReady = append(r.NotReady, "Ferry is shutting down")
	}
	for name, cl := range a.clusters {
		if !cl.Up() {
			r.NotReady = append(r.NotReady, fmt.Sprintf("Kafka cluster %q is unreachable", name))
		}
	}
	for name, st := range a.BackendStats() {
		if st.Assignments == 0 {
			// franz-go reports every assignment, an empty one too.
			r.NotReady = append(r.NotReady, fmt.Sprintf("back end %q has not joined its group", name))
		}
	}
	sort.Strings(r.NotReady)
	r.Ready = len(r.NotReady) == 0
	return r
}

// serveReady answers 200 when Ferry is ready, else 503; the JSON body
// says what is not.
func (a *App) serveReady(w http.ResponseWriter, _ *http.Request) {
	r := a.ready()
	w.Header().Set("Content-Type", "application/json")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(r)
}
