package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	connectcors "connectrpc.com/cors"
	"connectrpc.com/vanguard"
	"github.com/rs/cors"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferryproxy/ferry/internal/config"
)

// Handler serves the HTTP half of a Split: gRPC over HTTP/2 goes to the
// gRPC server as is (grpc.Server.ServeHTTP), and gRPC-Web, Connect and
// REST are transcoded by connectrpc.com/vanguard into gRPC calls of the
// same server, so every route, interceptor and limit applies to them as
// to native gRPC. Without CORS origins configured, browsers may call from
// the listener's own origin only.
type Handler struct {
	srv     *grpc.Server
	maxMsg  uint32
	current atomic.Pointer[http.Handler] // the transcoder of the services now loaded
	methods atomic.Pointer[methodPaths]  // their methods' paths
	outer   http.Handler                 // CORS around serve
}

// NewHandler serves services on srv, whose catch-all handler answers
// them; maxMsg bounds a message vanguard buffers, in bytes (the gRPC
// listener's max_recv_message_size).
func NewHandler(srv *grpc.Server, services []protoreflect.ServiceDescriptor, maxMsg int, cfg config.Web) (*Handler, error) {
	h := &Handler{srv: srv, maxMsg: uint32(maxMsg)}
	if err := h.SetServices(services); err != nil {
		return nil, err
	}
	h.outer = CORS(cfg.CORS, http.HandlerFunc(h.serve))
	return h, nil
}

// CORS wraps next with the cross-origin policy c, allowing the methods
// and headers gRPC-Web, Connect and REST use, and Authorization; without
// allowed origins it returns next.
func CORS(c config.CORS, next http.Handler) http.Handler {
	if !c.Enabled() {
		return next
	}
	return cors.New(cors.Options{
		AllowedOrigins:   c.AllowedOrigins,
		AllowedMethods:   append(connectcors.AllowedMethods(), http.MethodPut, http.MethodPatch, http.MethodDelete),
		AllowedHeaders:   append(append(connectcors.AllowedHeaders(), "Authorization"), c.AllowedHeaders...),
		ExposedHeaders:   append(connectcors.ExposedHeaders(), c.ExposedHeaders...),
		AllowCredentials: c.AllowCredentials,
		MaxAge:           int(c.MaxAge.Seconds()),
	}).Handler(next)
}

// SetServices serves services from now on, as a reload loaded them;
// calls already running keep the transcoder they started on.
func (h *Handler) SetServices(services []protoreflect.ServiceDescriptor) error {
	vs := make([]*vanguard.Service, len(services))
	for i, sd := range services {
		vs[i] = vanguard.NewServiceWithSchema(sd, h.srv,
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
			// Ferry's gRPC server forces its own codec, which takes the
			// proto bytes as they are.
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			// The gRPC server may have no decompressors: vanguard
			// decodes compressed bodies itself.
			vanguard.WithNoTargetCompression(),
			vanguard.WithMaxMessageBufferBytes(h.maxMsg),
		)
	}
	tc, err := vanguard.NewTranscoder(vs, vanguard.WithCodec(JSONCodec(false)), vanguard.WithUnknownHandler(http.HandlerFunc(notFound)))
	if err != nil {
		return fmt.Errorf("serving gRPC-Web, Connect and REST (listeners.grpc.web): %w", err)
	}
	paths := methodPaths{}
	for _, sd := range services {
		ms := sd.Methods()
		for i := range ms.Len() {
			paths["/"+string(sd.FullName())+"/"+string(ms.Get(i).Name())] = true
		}
	}
	var th http.Handler = tc
	h.methods.Store(&paths)
	h.current.Store(&th)
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.outer.ServeHTTP(w, r) }

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if r.ProtoMajor == 2 && isGRPC(ct) {
		h.srv.ServeHTTP(w, r)
		return
	}
	dropHopByHop(r.Header)
	switch {
	case isText(ct):
		var finish func()
		w, r, finish = fromText(w, r)
		defer finish()
	case r.Method == http.MethodPost && r.Header.Get("Connect-Protocol-Version") == "" && h.methods.Load().has(r.URL.Path) &&
		strings.HasPrefix(ct, "application/") && !strings.HasPrefix(ct, "application/connect+") && !strings.HasPrefix(ct, "application/grpc"):
		// A unary Connect call to a method's own path: the version
		// header is optional in the protocol, and curl users leave it
		// out; vanguard would take the call for REST without it.
		r = r.Clone(r.Context())
		r.Header.Set("Connect-Protocol-Version", "1")
	}
	(*h.current.Load()).ServeHTTP(w, r)
}

// hopByHop are HTTP/1.1's connection-specific headers (RFC 9110, 7.6.1).
// They describe the browser's connection to Ferry, not the call, so they
// are not the call's metadata; nor are the headers Connection names. (The
// record layout never writes the standard ones either: see
// layout.reserved.)
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer", "Proxy-Authenticate", "Proxy-Authorization"}

// dropHopByHop removes them from h, and the headers Connection names.
func dropHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// methodPaths are the paths of the served methods, "/pkg.Service/Method".
type methodPaths map[string]bool

func (m *methodPaths) has(path string) bool { return (*m)[path] }

// isGRPC reports whether ct is gRPC's content type (not gRPC-Web's).
func isGRPC(ct string) bool {
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// notFound answers a path that names no method of the loaded services, in
// JSON as the Connect protocol and REST clients expect.
func notFound(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(map[string]string{"code": "not_found", "message": "no method is served at " + r.URL.Path})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	w.Write(b)
}
