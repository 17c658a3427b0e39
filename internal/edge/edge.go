// Package edge is the one chain every call through Ferry passes, whatever
// its face: a user's gRPC call (routes, Ferry's and Kafka-Pixy's gRPC
// services, health, reflection), a REST call (Ferry's Kafka API and
// Kafka-Pixy's paths) and a back end's outbound call to its server. A
// concern written once as an Interceptor (request ids, the access log, and
// later authentication, authorization, metrics and tracing) applies to all
// of them: Chain adapts it to gRPC server options, to an HTTP handler and
// to gRPC dial options.
//
// A call passes the chain once. Ferry's REST API is transcoded in process
// into its gRPC server, so such a call meets the HTTP handler first and
// the gRPC interceptors after: those find the Call in the context and only
// note the gRPC method it became.
package edge

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Face is how a call reached Ferry, or left it.
type Face string

// The faces of a call.
const (
	// GRPC is a call to Ferry's gRPC listener: a route, one of Ferry's
	// own services (the Kafka APIs), health or reflection.
	GRPC Face = "grpc"
	// REST is a call to Ferry's Kafka API over HTTP (paths under /v1/).
	REST Face = "rest"
	// PixyREST is a call to Kafka-Pixy's REST paths.
	PixyREST Face = "pixy-rest"
	// HTTP is a request to the HTTP listener that no face serves.
	HTTP Face = "http"
	// BackendOut is a back end's call to its gRPC server.
	BackendOut Face = "backend-out"
)

// RequestIDKey is the gRPC metadata key and HTTP header (in any case) that
// carries a call's request id, in and out.
const RequestIDKey = "x-request-id"

// maxRequestIDLen bounds a request id taken from a caller: ids land in
// logs and in the calls Ferry makes.
const maxRequestIDLen = 128

// Call describes one call passing the chain. Its exported fields are set
// before the first interceptor runs and not changed after.
type Call struct {
	// Face is how the call came or went.
	Face Face
	// Method is the gRPC method, "/package.Service/Method", or the HTTP
	// method of a REST call.
	Method string
	// Path is the URL path of a REST call; empty for gRPC.
	Path string
	// Peer is the address of the other side: the client, or a back end's
	// server target.
	Peer string
	// RequestID is the caller's x-request-id when it sent a sane one
	// (printable ASCII without spaces, at most 128 bytes), else one Ferry
	// generated. It is returned to the caller and passed on to back ends.
	RequestID string
	// Start is when the call reached the chain.
	Start time.Time

	mu     sync.Mutex
	rpc    string // the gRPC method a REST call was transcoded to
	route  string // the HTTP pattern that served a REST call
	status int    // the HTTP status of a REST call
}

// RPC returns the gRPC method a call runs: Method for gRPC faces, the
// method Ferry's REST API transcoded the call to, or "" for a REST call
// served without gRPC (Kafka-Pixy's paths).
func (c *Call) RPC() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rpc
}

// Route returns the HTTP route pattern that served a REST call, such as
// "POST /topics/{topic}/messages", once it was served.
func (c *Call) Route() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.route
}

// Status returns the HTTP status of a REST call once it was answered, 0
// for gRPC faces.
func (c *Call) Status() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// setRPC notes the gRPC method a call runs.
func (c *Call) setRPC(m string) {
	c.mu.Lock()
	c.rpc = m
	c.mu.Unlock()
}

// endHTTP notes how a REST call was answered.
func (c *Call) endHTTP(route string, status int) {
	c.mu.Lock()
	c.route, c.status = route, status
	c.mu.Unlock()
}

// attrs describe the call for a log record; err is what the call
// returned, which gives a gRPC call its code.
func (c *Call) attrs(err error) []slog.Attr {
	c.mu.Lock()
	defer c.mu.Unlock()
	as := make([]slog.Attr, 0, 9)
	as = append(as, slog.String("face", string(c.Face)), slog.String("method", c.Method))
	if c.Path != "" {
		route := c.route
		if route == "" {
			route = c.Path
		}
		as = append(as, slog.String("route", route), slog.String("path", c.Path))
		if c.rpc != "" {
			as = append(as, slog.String("rpc", c.rpc))
		}
		as = append(as, slog.Int("status", c.status))
	} else {
		as = append(as, slog.String("code", status.Code(err).String()))
	}
	return append(as,
		slog.Duration("duration", time.Since(c.Start)),
		slog.String("request_id", c.RequestID),
		slog.String("peer", c.Peer))
}

type callKey struct{}

// FromContext returns the call ctx belongs to, or nil outside any.
func FromContext(ctx context.Context) *Call {
	c, _ := ctx.Value(callKey{}).(*Call)
	return c
}

// newContext returns ctx carrying c.
func newContext(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// Interceptor is one concern applied to every call. It may read c and the
// context, must call next at most once to run the call, and returns what
// next returned, or an error of its own (a gRPC status) to refuse the call
// without running it. For REST calls next returns nil: how the call was
// answered is c.Status() once next returned.
type Interceptor func(ctx context.Context, c *Call, next func(context.Context) error) error

// Options configure a Chain.
type Options struct {
	// Interceptors run in order, the first outermost, around every call.
	Interceptors []Interceptor
	// StatsHandlers observe the gRPC faces at the transport level (bytes,
	// headers, connection events), beside the interceptors.
	StatsHandlers []stats.Handler
}

// Chain runs the interceptors around a call of any face. Its methods adapt
// it to each face.
type Chain struct {
	interceptors  []Interceptor
	statsHandlers []stats.Handler
}

// New returns the chain of opts.
func New(opts Options) *Chain {
	return &Chain{interceptors: opts.Interceptors, statsHandlers: opts.StatsHandlers}
}

// run carries c through the interceptors into final, with c in the
// context.
func (ch *Chain) run(ctx context.Context, c *Call, final func(context.Context) error) error {
	ctx = newContext(ctx, c)
	next := final
	for i := len(ch.interceptors) - 1; i >= 0; i-- {
		in, inner := ch.interceptors[i], next
		next = func(ctx context.Context) error { return in(ctx, c, inner) }
	}
	return next(ctx)
}

// requestID returns the caller's id when it is sane, else a new one.
func requestID(given string) string {
	if SaneRequestID(given) {
		return given
	}
	return rand.Text()
}

// SaneRequestID reports whether id may be taken from a caller: 1 to 128
// bytes of printable ASCII, spaces excluded.
func SaneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// AccessLog logs one line, message "call" at level info, as each call
// ends: its face, method, route (REST), gRPC code or HTTP status,
// duration, request id and peer.
func AccessLog(logger *slog.Logger) Interceptor {
	return func(ctx context.Context, c *Call, next func(context.Context) error) error {
		err := next(ctx)
		logger.LogAttrs(ctx, slog.LevelInfo, "call", c.attrs(err)...)
		return err
	}
}

// httpHeader is RequestIDKey as net/http spells it.
var httpHeader = http.CanonicalHeaderKey(RequestIDKey)
