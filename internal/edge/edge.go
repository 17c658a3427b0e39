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
	"crypto/tls"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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
	// TLS is the state of the caller's TLS connection, nil for plaintext
	// and for outbound calls. Its VerifiedChains hold a client
	// certificate the listener verified.
	TLS *tls.ConnectionState

	// header returns the first value of a request metadata entry or HTTP
	// header, nil for outbound calls.
	header func(key string) string

	began int // how many interceptors began; only the chain's goroutine of the moment touches it

	mu       sync.Mutex
	rpc      string // the gRPC method a REST call was transcoded to
	identity string // who the call comes from, once authenticated
	route    string // the HTTP pattern that served a REST call
	name     string // the configured route that served the call
	status   int    // the HTTP status of a REST call
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

// NewCall returns a call of face and method, as the faces make them, whose
// Header reads header (nil: no metadata): for tests of interceptors.
func NewCall(face Face, method string, header func(key string) string) *Call {
	return &Call{Face: face, Method: method, Start: time.Now(), header: header}
}

// Header returns the first value of the caller's metadata entry key (an
// HTTP header for REST faces), "" when absent or for an outbound call.
func (c *Call) Header(key string) string {
	if c.header == nil {
		return ""
	}
	return c.header(key)
}

// SetIdentity notes who the call comes from, for the access log.
func (c *Call) SetIdentity(name string) {
	c.mu.Lock()
	c.identity = name
	c.mu.Unlock()
}

// SetRouteName notes the configured route (routes[].name) that serves
// the call, once the routing table chose it.
func (c *Call) SetRouteName(name string) {
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
}

// RouteName returns the configured route that served the call, "" for a
// call no route served (Ferry's own services, REST faces, refused calls).
func (c *Call) RouteName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name
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
	as := make([]slog.Attr, 0, 10)
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
	if c.identity != "" {
		as = append(as, slog.String("identity", c.identity))
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

// Interceptor is one concern applied to every call, in two halves:
// Begin as the call reaches the chain (for an outbound call, before it is
// sent), End once as it ends. Either may be nil.
//
// Begin may return a context for the rest of the call (nil keeps ctx), and
// an error, a gRPC status, to refuse the call: Ferry then does not serve
// it, the interceptors after it neither begin nor end, and those before it
// end with the refusal. End gets the call's error — nil, or its gRPC
// status; for a REST call nil, with the HTTP status in c.Status().
//
// Two halves rather than one function around the call: an outbound
// stream ends in a later RecvMsg, not when the function that opened it
// returns, and the halves need no goroutine to wait for that.
type Interceptor struct {
	Begin func(ctx context.Context, c *Call) (context.Context, error)
	End   func(ctx context.Context, c *Call, err error)
}

// Options configure a Chain.
type Options struct {
	// Interceptors begin in order and end in reverse order: the first is
	// outermost, and sees the refusals of the others.
	Interceptors []Interceptor
	// StatsHandlers observe the gRPC faces at the transport level (bytes,
	// headers, connection events), beside the interceptors.
	StatsHandlers []stats.Handler
	// RequestIDs gives every call a request id — the caller's, else a new
	// one — returns it to the caller as x-request-id and passes it on to
	// back-end servers. Without it a call's RequestID is the caller's sane
	// x-request-id or empty, and Ferry adds no header: an extra header
	// with a fresh value on every call and answer costs the gRPC faces 8 %
	// of a unary call's throughput, for ids only a log reads.
	RequestIDs bool
}

// Chain runs the interceptors on a call of any face. Its methods adapt it
// to each face.
type Chain struct {
	interceptors  []Interceptor
	statsHandlers []stats.Handler
	requestIDs    bool
}

// New returns the chain of opts.
func New(opts Options) *Chain {
	return &Chain{interceptors: opts.Interceptors, statsHandlers: opts.StatsHandlers, requestIDs: opts.RequestIDs}
}

// idle reports whether the chain has nothing to do on a gRPC call: no
// interceptor and no request ids. The gRPC faces then leave it out, and a
// call costs nothing for it. (The HTTP face still notes each call's face:
// its cost is small beside HTTP's own.)
func (ch *Chain) idle() bool { return len(ch.interceptors) == 0 && !ch.requestIDs }

// begin puts c in the context and begins the interceptors in order. It
// stops at a refusal and returns it: the call must not run. Either way the
// face calls end once the call is over (refused, with the refusal), which
// ends the interceptors that began.
func (ch *Chain) begin(ctx context.Context, c *Call) (context.Context, error) {
	ctx = newContext(ctx, c)
	for _, in := range ch.interceptors {
		if in.Begin != nil {
			next, err := in.Begin(ctx, c)
			if err != nil {
				return ctx, err
			}
			if next != nil {
				ctx = next
			}
		}
		c.began++
	}
	return ctx, nil
}

// end ends the interceptors that began, the last first.
func (ch *Chain) end(ctx context.Context, c *Call, err error) {
	for i := c.began - 1; i >= 0; i-- {
		if end := ch.interceptors[i].End; end != nil {
			end(ctx, c, err)
		}
	}
}

// idPrefix makes the request ids of this process unlike any other's:
// 50 random bits, then a counter. Request ids name calls in logs; they are
// not secrets, and a counter costs nothing on every call.
var (
	idPrefix = rand.Text()[:10] + "-"
	idSeq    atomic.Uint64
)

// NewRequestID returns a request id no other call of any Ferry has.
func NewRequestID() string {
	return idPrefix + strconv.FormatUint(idSeq.Add(1), 36)
}

// requestID returns the caller's id when it is sane, else a new one when
// the chain gives calls ids, else "".
func (ch *Chain) requestID(given string) string {
	switch {
	case SaneRequestID(given):
		return given
	case ch.requestIDs:
		return NewRequestID()
	default:
		return ""
	}
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
// duration, request id and peer. Put first in the chain, it also logs the
// calls the interceptors after it refuse.
func AccessLog(logger *slog.Logger) Interceptor {
	return Interceptor{End: func(ctx context.Context, c *Call, err error) {
		logger.LogAttrs(ctx, slog.LevelInfo, "call", c.attrs(err)...)
	}}
}

// httpHeader is RequestIDKey as net/http spells it.
var httpHeader = http.CanonicalHeaderKey(RequestIDKey)
