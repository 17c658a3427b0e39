package edge

import (
	"encoding/json"
	"net/http"
	"time"

	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/httpcode"
)

// Mux is the HTTP listener's handler: an http.ServeMux whose handlers
// each serve one face, with every request passing the chain once under
// the face of the handler it reaches (HTTP when none does).
type Mux struct {
	ch    *Chain
	mux   *http.ServeMux
	faces map[string]Face // by pattern
}

// NewMux returns a Mux with no handlers; unknown paths get net/http's 404.
func (ch *Chain) NewMux() *Mux {
	return &Mux{ch: ch, mux: http.NewServeMux(), faces: map[string]Face{}}
}

// Handle serves pattern with h as face.
func (m *Mux) Handle(pattern string, face Face, h http.Handler) {
	m.mux.Handle(pattern, h)
	m.faces[pattern] = face
}

// Len returns how many handlers the mux has.
func (m *Mux) Len() int { return len(m.faces) }

// ServeHTTP runs the request through the chain into the handler of its
// pattern. The request id goes back as the X-Request-Id header.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	face := HTTP
	if _, pattern := m.mux.Handler(r); pattern != "" {
		if f, ok := m.faces[pattern]; ok {
			face = f
		}
	}
	c := &Call{
		Face:      face,
		Method:    r.Method,
		Path:      r.URL.Path,
		Peer:      r.RemoteAddr,
		RequestID: m.ch.requestID(r.Header.Get(httpHeader)),
		Start:     time.Now(),
		TLS:       r.TLS,
		header:    r.Header.Get,
	}
	if m.ch.requestIDs {
		w.Header().Set(httpHeader, c.RequestID)
	}
	ctx, err := m.ch.begin(r.Context(), c)
	if err != nil {
		// An interceptor refused the call: answered with the HTTP status
		// of its gRPC code (401, 403, 429…) and its message as JSON.
		code := httpcode.FromCode(status.Code(err))
		c.endHTTP("", code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": status.Convert(err).Message()})
		m.ch.end(ctx, c, err)
		return
	}
	rw := &statusWriter{ResponseWriter: w}
	// net/http muxes note the pattern on the request they are given: the
	// innermost one's is the route.
	r = r.WithContext(ctx)
	m.mux.ServeHTTP(rw, r)
	c.endHTTP(r.Pattern, rw.code())
	m.ch.end(ctx, c, nil)
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Flush passes a flush on: grpc-go and the streaming REST paths need it.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code is the status answered, 200 when the handler wrote nothing.
func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

var _ http.Flusher = (*statusWriter)(nil)
