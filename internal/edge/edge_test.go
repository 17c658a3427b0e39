package edge

import (
	"bytes"
	"context"
	"fmt"
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
	ids := New(Options{RequestIDs: true})
	if id := ids.requestID("a b"); !SaneRequestID(id) || id == "a b" {
		t.Errorf("requestID(%q) = %q, want a new sane id", "a b", id)
	}
}

func FuzzRequestID(f *testing.F) {
	f.Add("abc")
	f.Add("a\x00b")
	ch := New(Options{RequestIDs: true})
	f.Fuzz(func(t *testing.T, given string) {
		id := ch.requestID(given)
		if !SaneRequestID(id) {
			t.Fatalf("requestID(%q) = %q, not sane", given, id)
		}
		if SaneRequestID(given) && id != given {
			t.Fatalf("requestID(%q) = %q, want the caller's", given, id)
		}
	})
}

// mark is an interceptor that notes its halves in got.
func mark(t *testing.T, got *[]string, name string, refuse error) Interceptor {
	return Interceptor{
		Begin: func(ctx context.Context, c *Call) (context.Context, error) {
			if FromContext(ctx) != c {
				t.Errorf("%s: the context does not carry the call", name)
			}
			*got = append(*got, name+">")
			return nil, refuse
		},
		End: func(_ context.Context, _ *Call, err error) {
			*got = append(*got, fmt.Sprintf("<%s(%v)", name, status.Code(err)))
		},
	}
}

// TestChainOrder: interceptors begin first outermost and end in reverse;
// a refusal ends only those that began before it.
func TestChainOrder(t *testing.T) {
	var got []string
	no := status.Error(codes.PermissionDenied, "no")
	for _, tc := range []struct {
		chain []Interceptor
		want  string
	}{
		{[]Interceptor{mark(t, &got, "a", nil), {}, mark(t, &got, "b", nil)}, "a> b> call <b(OK) <a(OK)"},
		{[]Interceptor{mark(t, &got, "a", nil), mark(t, &got, "b", no), mark(t, &got, "c", nil)}, "a> b> <a(PermissionDenied)"},
	} {
		got = nil
		ch := New(Options{Interceptors: tc.chain})
		c := &Call{}
		ctx, err := ch.begin(context.Background(), c)
		if err == nil {
			got = append(got, "call")
		}
		ch.end(ctx, c, err)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("halves = %q, want %q", strings.Join(got, " "), tc.want)
		}
	}
}

// TestMuxOnce: a request through the mux is logged once with its face,
// route and status, and answered with its request id.
func TestMuxOnce(t *testing.T) {
	var log bytes.Buffer
	ch := New(Options{Interceptors: []Interceptor{AccessLog(slog.New(slog.NewTextHandler(&log, nil)))}, RequestIDs: true})
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
// handler; the answer is the HTTP status of its code, and the interceptors
// before it log the refusal.
func TestMuxRefused(t *testing.T) {
	var log bytes.Buffer
	refuse := Interceptor{Begin: func(context.Context, *Call) (context.Context, error) {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}}
	mux := New(Options{Interceptors: []Interceptor{AccessLog(slog.New(slog.NewTextHandler(&log, nil))), refuse}}).NewMux()
	mux.Handle("/", PixyREST, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("the handler ran") }))
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"error":"no token"`) {
		t.Errorf("answer = %d %s, want 401 with the reason", w.Code, w.Body)
	}
	if !strings.Contains(log.String(), "status=401") {
		t.Errorf("access log = %q, want the refusal's status", log.String())
	}
}

// TestServerNestedOnce: a gRPC call under a call already in the context
// (a REST call transcoded in process) does not pass the chain again.
func TestServerNestedOnce(t *testing.T) {
	runs := 0
	count := Interceptor{Begin: func(context.Context, *Call) (context.Context, error) { runs++; return nil, nil }}
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

// fakeStream is a client stream whose RecvMsg answers err.
type fakeStream struct {
	grpc.ClientStream
	err error
}

func (s fakeStream) RecvMsg(any) error { return s.err }

// TestOutboundStream: an outbound stream's call ends at its last RecvMsg —
// an error, io.EOF, or the one response of a method that does not stream
// responses — or when its context ends without one, with the request id of
// its metadata, of the call it is made for, or a new one in its outgoing
// metadata.
func TestOutboundStream(t *testing.T) {
	defer goleak.VerifyNone(t)
	type result struct {
		err error
		id  string
	}
	results := make(chan result, 1)
	rec := Interceptor{End: func(_ context.Context, c *Call, err error) { results <- result{err, c.RequestID} }}
	out := outbound{ch: New(Options{Interceptors: []Interceptor{rec}, RequestIDs: true}), target: "t:1"}
	parent := newContext(context.Background(), &Call{RequestID: "parent"})
	down := status.Error(codes.Unavailable, "down")
	cancelled, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		desc    grpc.StreamDesc
		end     error // what RecvMsg answers
		recv    bool  // call RecvMsg; else cancel the context
		wantErr error
		wantID  string
	}{
		{"error", metadata.AppendToOutgoingContext(context.Background(), RequestIDKey, "given"), grpc.StreamDesc{ServerStreams: true}, down, true, down, "given"},
		{"eof", parent, grpc.StreamDesc{ServerStreams: true}, io.EOF, true, nil, "parent"},
		{"single response", context.Background(), grpc.StreamDesc{}, nil, true, nil, ""},
		{"given by the back end", WithRequestID(context.Background(), "set"), grpc.StreamDesc{ServerStreams: true}, io.EOF, true, nil, "set"},
		{"cancelled", cancelled, grpc.StreamDesc{ServerStreams: true}, nil, false, status.Error(codes.Canceled, context.Canceled.Error()), ""},
	} {
		var sent string
		streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
			md, _ := metadata.FromOutgoingContext(ctx)
			sent = strings.Join(md.Get(RequestIDKey), ",")
			return fakeStream{err: tc.end}, nil
		}
		cs, err := out.stream(tc.ctx, &tc.desc, nil, "/s.S/M", streamer)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-results:
			t.Fatalf("%s: the call ended before its last RecvMsg: %v", tc.name, r)
		default:
		}
		if tc.recv {
			_ = cs.RecvMsg(nil)
		} else {
			cancel()
		}
		r := <-results
		if status.Code(r.err) != status.Code(tc.wantErr) {
			t.Errorf("%s: the call ended with %v, want %v", tc.name, r.err, tc.wantErr)
		}
		switch {
		case tc.name == "given by the back end":
			if r.id != tc.wantID {
				t.Errorf("%s: request id logged %q; want %q", tc.name, r.id, tc.wantID)
			}
		case tc.wantID != "" && (sent != tc.wantID || r.id != tc.wantID):
			t.Errorf("%s: request id sent %q, logged %q; want %q", tc.name, sent, r.id, tc.wantID)
		case tc.wantID == "" && (!SaneRequestID(sent) || sent != r.id):
			t.Errorf("%s: request id sent %q, logged %q; want a new one", tc.name, sent, r.id)
		}
		if tc.recv {
			_ = cs.RecvMsg(nil) // a second end changes nothing
			select {
			case r := <-results:
				t.Errorf("%s: the call ended twice: %v", tc.name, r)
			default:
			}
		}
	}
}

func TestNewRequestIDUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewRequestID()
		if seen[id] || !SaneRequestID(id) {
			t.Fatalf("request id %q repeated or not sane", id)
		}
		seen[id] = true
	}
}

// TestNoRequestIDs: without RequestIDs, Ferry makes no id and adds no
// header; a caller's sane id still names the call.
func TestNoRequestIDs(t *testing.T) {
	var got []string
	rec := Interceptor{End: func(_ context.Context, c *Call, _ error) { got = append(got, c.RequestID) }}
	ch := New(Options{Interceptors: []Interceptor{rec}})
	mux := ch.NewMux()
	mux.Handle("/", PixyREST, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, id := range []string{"", "given"} {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set("X-Request-Id", id)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if h := w.Header().Get("X-Request-Id"); h != "" {
			t.Errorf("answered X-Request-Id %q", h)
		}
	}
	out := outbound{ch: ch, target: "t:1"}
	streamer := func(ctx context.Context, _ *grpc.StreamDesc, _ *grpc.ClientConn, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
		if md, _ := metadata.FromOutgoingContext(ctx); len(md.Get(RequestIDKey)) > 0 {
			t.Errorf("outbound metadata has x-request-id %q", md.Get(RequestIDKey))
		}
		return fakeStream{err: io.EOF}, nil
	}
	cs, err := out.stream(WithRequestID(context.Background(), ""), &grpc.StreamDesc{ServerStreams: true}, nil, "/s.S/M", streamer)
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.RecvMsg(nil)
	if strings.Join(got, ",") != ",given," {
		t.Errorf("request ids = %q, want none, the caller's, none", got)
	}
}

// TestIdleChain: a chain with no interceptor and no request ids puts no
// interceptor on the gRPC faces; one with either does.
func TestIdleChain(t *testing.T) {
	if n := len(New(Options{}).ServerOptions()); n != 0 {
		t.Errorf("idle chain: %d server options, want 0", n)
	}
	if n := len(New(Options{}).DialOptions("t:1")); n != 0 {
		t.Errorf("idle chain: %d dial options, want 0", n)
	}
	if n := len(New(Options{RequestIDs: true}).ServerOptions()); n != 2 {
		t.Errorf("chain with request ids: %d server options, want 2", n)
	}
	if n := len(New(Options{Interceptors: []Interceptor{{}}}).DialOptions("t:1")); n != 2 {
		t.Errorf("chain with an interceptor: %d dial options, want 2", n)
	}
}
