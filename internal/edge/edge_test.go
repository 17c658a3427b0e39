package edge

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestSaneRequestID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		sane bool
	}{
		{"", false},
		{"abc-123", true},
		{"a b", false},
		{"tab\t", false},
		{"é", false},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"~!#$%&'()*+,./:;<=>?@[]^_`{|}", true},
	} {
		if got := SaneRequestID(tc.id); got != tc.sane {
			t.Errorf("SaneRequestID(%q) = %v, want %v", tc.id, got, tc.sane)
		}
	}
	if id := requestID("a b"); !SaneRequestID(id) || id == "a b" {
		t.Errorf("requestID(%q) = %q, want a new sane id", "a b", id)
	}
}

func FuzzRequestID(f *testing.F) {
	f.Add("abc")
	f.Add("a\x00b")
	f.Fuzz(func(t *testing.T, given string) {
		id := requestID(given)
		if !SaneRequestID(id) {
			t.Fatalf("requestID(%q) = %q, not sane", given, id)
		}
		if SaneRequestID(given) && id != given {
			t.Fatalf("requestID(%q) = %q, want the caller's", given, id)
		}
	})
}

// TestChainOrder: interceptors run first outermost, each seeing the call.
func TestChainOrder(t *testing.T) {
	var got []string
	mark := func(name string) Interceptor {
		return func(ctx context.Context, c *Call, next func(context.Context) error) error {
			if FromContext(ctx) != c {
				t.Errorf("%s: the context does not carry the call", name)
			}
			got = append(got, name+">")
			err := next(ctx)
			got = append(got, "<"+name)
			return err
		}
	}
	ch := New(Options{Interceptors: []Interceptor{mark("a"), mark("b")}})
	err := ch.run(context.Background(), &Call{}, func(context.Context) error { got = append(got, "call"); return nil })
	if err != nil || strings.Join(got, " ") != "a> b> call <b <a" {
		t.Errorf("order = %q, %v", got, err)
	}
}

// TestMuxOnce: a request through the mux is logged once with its face,
// route and status, and answered with its request id.
func TestMuxOnce(t *testing.T) {
	var log bytes.Buffer
	ch := New(Options{Interceptors: []Interceptor{AccessLog(slog.New(slog.NewTextHandler(&log, nil)))}})
	mux := ch.NewMux()
	inner := http.NewServeMux()
	inner.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		if c := FromContext(r.Context()); c == nil || c.Face != REST {
			t.Errorf("the handler's context has call %v", c)
		}
		w.WriteHeader(http.StatusTeapot)
	})
	mux.Handle("/v1/", REST, inner)

	for _, tc := range []struct {
		path, id, want string
	}{
		{"/v1/things/7", "rid-1", `face=rest method=GET route="GET /v1/things/{id}" path=/v1/things/7 status=418`},
		{"/other", "rid-2", `face=http method=GET route=/other path=/other status=404`},
	} {
		log.Reset()
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("X-Request-Id", tc.id)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Header().Get("X-Request-Id") != tc.id {
			t.Errorf("%s: X-Request-Id = %q, want %q", tc.path, w.Header().Get("X-Request-Id"), tc.id)
		}
		if n := strings.Count(log.String(), "msg=call"); n != 1 || !strings.Contains(log.String(), tc.want) || !strings.Contains(log.String(), "request_id="+tc.id) {
			t.Errorf("%s: %d lines:\n%s\nwant one with %s", tc.path, n, log.String(), tc.want)
		}
	}
}

// TestMuxRefused: an interceptor that refuses a call keeps it from the
// handler.
func TestMuxRefused(t *testing.T) {
	refuse := func(context.Context, *Call, func(context.Context) error) error {
		return status.Error(codes.PermissionDenied, "no")
	}
	mux := New(Options{Interceptors: []Interceptor{refuse}}).NewMux()
	mux.Handle("/", PixyREST, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("the handler ran") }))
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
	if w.Code != http.StatusForbidden {
		t.Errorf("status = %d, want 403", w.Code)
	}
}

// TestServerNestedOnce: a gRPC call under a call already in the context
// (a REST call transcoded in process) does not pass the chain again.
func TestServerNestedOnce(t *testing.T) {
	runs := 0
	count := func(ctx context.Context, c *Call, next func(context.Context) error) error { runs++; return next(ctx) }
	ch := New(Options{Interceptors: []Interceptor{count}})
	outer := &Call{Face: REST}
	ctx := newContext(context.Background(), outer)
	_, err := ch.unaryServer(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/s.S/M"}, func(ctx context.Context, _ any) (any, error) {
		if FromContext(ctx) != outer {
			t.Error("the handler's call is not the REST call")
		}
		return nil, nil
	})
	if err != nil || runs != 0 || outer.RPC() != "/s.S/M" {
		t.Errorf("runs = %d, rpc = %q, err = %v; want 0, /s.S/M, nil", runs, outer.RPC(), err)
	}
}

// fakeStream is a client stream that ends with err on its first RecvMsg.
type fakeStream struct {
	grpc.ClientStream
	err error
}

func (s fakeStream) RecvMsg(any) error { return s.err }

// TestOutboundStream: an outbound stream passes the chain until its last
// RecvMsg, with the request id of its metadata, of the call it is made
// for, or a new one, in its outgoing metadata.
func TestOutboundStream(t *testing.T) {
	defer goleak.VerifyNone(t)
	type result struct {
		err error
		id  string
	}
	results := make(chan result, 1)
	rec := func(ctx context.Context, c *Call, next func(context.Context) error) error {
		err := next(ctx)
		results <- result{err, c.RequestID}
		return err
	}
	out := outbound{ch: New(Options{Interceptors: []Interceptor{rec}}), target: "t:1"}
	parent := newContext(context.Background(), &Call{RequestID: "parent"})
	down := status.Error(codes.Unavailable, "down")
	for _, tc := range []struct {
		ctx     context.Context
		end     error
		wantErr error
		wantID  string
	}{
		{metadata.AppendToOutgoingContext(context.Background(), RequestIDKey, "given"), down, down, "given"},
		{parent, io.EOF, nil, "parent"},
		{context.Background(), io.EOF, nil, ""},
	} {
		var sent string
		streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
			md, _ := metadata.FromOutgoingContext(ctx)
			sent = strings.Join(md.Get(RequestIDKey), ",")
			return fakeStream{err: tc.end}, nil
		}
		cs, err := out.stream(tc.ctx, &grpc.StreamDesc{}, nil, "/s.S/M", streamer)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-results:
			t.Fatalf("the call ended before its last RecvMsg: %v", r)
		default:
		}
		_ = cs.RecvMsg(nil)
		r := <-results
		if r.err != tc.wantErr {
			t.Errorf("the call ended with %v, want %v", r.err, tc.wantErr)
		}
		if tc.wantID != "" && (sent != tc.wantID || r.id != tc.wantID) {
			t.Errorf("request id sent %q, logged %q; want %q", sent, r.id, tc.wantID)
		}
		if tc.wantID == "" && (!SaneRequestID(sent) || sent != r.id) {
			t.Errorf("request id sent %q, logged %q; want a new one", sent, r.id)
		}
	}
}
