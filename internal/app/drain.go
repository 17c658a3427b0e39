package app

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stoppingMessage is what a call that arrives while Ferry stops is told.
const stoppingMessage = "Ferry is shutting down: retry on another instance"

// errStopping is the status of a call that arrives while Ferry stops: a
// client may retry it on another instance at once.
var errStopping = status.Error(codes.Unavailable, stoppingMessage)

// inFlight counts the calls of every face while they run, so that a stop
// can refuse new ones and wait for those running to finish before it
// closes the listeners: until then a new call is answered with a reason,
// not a refused connection.
type inFlight struct {
	mu       sync.Mutex
	n        int
	stopping bool
	idle     chan struct{} // closed once stopping and no call runs
}

func newInFlight() *inFlight { return &inFlight{idle: make(chan struct{})} }

// enter counts a call in; it is false once the stop began, and the call
// must then be refused.
func (f *inFlight) enter() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return false
	}
	f.n++
	return true
}

// leave counts a call out.
func (f *inFlight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.stopping && f.n == 0 {
		close(f.idle)
	}
}

// stop refuses every call from now on; the channel it returns is closed
// once the calls running have finished. It is safe to call more than
// once.
func (f *inFlight) stop() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopping {
		f.stopping = true
		if f.n == 0 {
			close(f.idle)
		}
	}
	return f.idle
}

// stopped reports whether stop was called.
func (f *inFlight) stopped() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopping
}

// Stopping reports whether Close began: from then on Ferry refuses new
// calls, reports NOT_SERVING, and should be taken out of service.
func (a *App) Stopping() bool { return a.calls.stopped() }

// healthService is the prefix of grpc.health.v1's methods, which are
// served while Ferry stops (they report NOT_SERVING) and are not waited
// for: a Watch lasts as long as its client wants.
const healthService = "/grpc.health.v1.Health/"

// countUnary counts a unary call while it runs, and answers one that
// arrives once Close began with UNAVAILABLE.
func (a *App) countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, healthService) {
		return h(ctx, req)
	}
	if !a.calls.enter() {
		return nil, errStopping
	}
	defer a.calls.leave()
	return h(ctx, req)
}

// countStream is countUnary for streaming calls, and for every call of a
// route (the catch-all handler).
func (a *App) countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, healthService) {
		return h(srv, ss)
	}
	if !a.calls.enter() {
		return errStopping
	}
	defer a.calls.leave()
	return h(srv, ss)
}

// countHTTP counts an HTTP request while it runs, and answers one that
// arrives once Close began with 503, closing its connection.
func (a *App) countHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.calls.enter() {
			w.Header().Set("Connection", "close")
			http.Error(w, stoppingMessage, http.StatusServiceUnavailable)
			return
		}
		defer a.calls.leave()
		next.ServeHTTP(w, r)
	})
}
