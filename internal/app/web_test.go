package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// webRoutes are an echo produce route, answered by a back end that echoes,
// and a fan-out fetch route.
func webRoutes(t *testing.T) (routes, fanTopic string) {
	req, rep := testkit.Name(t, "req"), testkit.Name(t, "rep")
	fanTopic = kit.Topic(t, 1, nil)
	startBackend(t, req, func(reqs []string, _ map[string]string) reply {
		if len(reqs) == 1 && reqs[0] == "fail" {
			return reply{code: 9, message: "the back end refused"}
		}
		return reply{msgs: reqs}
	})
	return fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 20s}
  - when: [{method: example.FanoutService/FanoutServerStream}]
    fetch: {topic: %s}
`, req, rep, fanTopic), fanTopic
}

// envelope frames a message as gRPC-Web and Connect streaming do.
func envelope(flags byte, msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// webFrame is one enveloped message read back.
type webFrame struct {
	flags byte
	msg   []byte
}

// readFrame reads one enveloped message.
func readFrame(r io.Reader) (webFrame, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return webFrame{}, err
	}
	msg := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return webFrame{}, err
	}
	return webFrame{h[0], msg}, nil
}

func post(t *testing.T, url, contentType string, body []byte, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestWebUnary: a produce route's unary method over the Connect protocol
// (JSON and binary) and gRPC-Web (binary and text), on the gRPC port,
// beside native gRPC; errors keep their code.
func TestWebUnary(t *testing.T) {
	routes, _ := webRoutes(t)
	a := startFerry(t, routes)
	base := "http://" + a.GRPCAddr() + echoSvc
	ctx := testkit.Context(t, 30*time.Second)

	// Native gRPC on the same port.
	if r := call(ctx, dial(t, a), "UnaryEcho", nil, "grpc"); r.err != nil || len(r.msgs) != 1 || r.msgs[0] != "grpc" {
		t.Fatalf("gRPC: %+v", r)
	}

	t.Run("connect json", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/json", []byte(`{"message":"hello json"}`), nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.Contains(string(body), `"message":"hello json"`) {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
	t.Run("connect proto", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/proto", echo("hello proto"), nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || unecho(body) != "hello proto" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
	})
	t.Run("connect error", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/json", []byte(`{"message":"fail"}`), nil)
		var e struct{ Code, Message string }
		body, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(body, &e); err != nil || res.StatusCode != 400 || e.Code != "failed_precondition" || e.Message != "the back end refused" {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
	t.Run("connect bad json", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/json", []byte(`{"message":5}`), nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 400 || !strings.Contains(string(body), "invalid_argument") || !strings.Contains(string(body), "message") {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
	t.Run("grpc-web", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/grpc-web+proto", envelope(0, echo("hello web")), nil)
		msgs, trailer := readGRPCWeb(t, res.Body)
		if res.StatusCode != 200 || len(msgs) != 1 || unecho(msgs[0]) != "hello web" || !strings.Contains(trailer, "grpc-status: 0") {
			t.Fatalf("%d %q %q", res.StatusCode, msgs, trailer)
		}
	})
	t.Run("grpc-web text", func(t *testing.T) {
		body := base64.StdEncoding.EncodeToString(envelope(0, echo("hello text")))
		res := post(t, base+"UnaryEcho", "application/grpc-web-text", []byte(body), nil)
		raw, _ := io.ReadAll(res.Body)
		// Each flushed piece is padded on its own: decode quantum by
		// quantum, as gRPC-Web clients do.
		var dec []byte
		for i := 0; i+4 <= len(raw); i += 4 {
			b, err := base64.StdEncoding.DecodeString(string(raw[i : i+4]))
			if err != nil {
				t.Fatalf("%q: %v", raw, err)
			}
			dec = append(dec, b...)
		}
		msgs, trailer := readGRPCWeb(t, bytes.NewReader(dec))
		if len(msgs) != 1 || unecho(msgs[0]) != "hello text" || !strings.Contains(trailer, "grpc-status: 0") {
			t.Fatalf("%q %q (%q)", msgs, trailer, raw)
		}
	})
	t.Run("grpc-web error", func(t *testing.T) {
		res := post(t, base+"UnaryEcho", "application/grpc-web+proto", envelope(0, echo("fail")), nil)
		_, trailer := readGRPCWeb(t, res.Body)
		status := res.Header.Get("Grpc-Status") + trailer
		if !strings.Contains(status, "9") || !strings.Contains(res.Header.Get("Grpc-Message")+trailer, "the back end refused") {
			t.Fatalf("headers %v trailer %q", res.Header, trailer)
		}
	})
	t.Run("connect server stream", func(t *testing.T) {
		// The back end answers a streamed call with its request messages.
		res := post(t, base+"ServerStreamingEcho", "application/connect+json", envelope(0, []byte(`{"message":"streamed"}`)), nil)
		f, err := readFrame(res.Body)
		if err != nil || res.StatusCode != 200 || string(f.msg) != `{"message":"streamed"}` {
			t.Fatalf("%d %q %v", res.StatusCode, f.msg, err)
		}
		end, err := readFrame(res.Body)
		if err != nil || end.flags&2 == 0 || strings.Contains(string(end.msg), "error") {
			t.Fatalf("end of stream %q %v", end.msg, err)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		res := post(t, "http://"+a.GRPCAddr()+"/nope.Service/Method", "application/json", []byte(`{}`), nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 404 || !strings.Contains(string(body), "/nope.Service/Method") {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
}

// readGRPCWeb reads a gRPC-Web response: its messages and its trailer.
func readGRPCWeb(t *testing.T, r io.Reader) (msgs [][]byte, trailer string) {
	t.Helper()
	for {
		f, err := readFrame(r)
		if err == io.EOF {
			return msgs, trailer
		}
		if err != nil {
			t.Fatalf("reading gRPC-Web frames: %v", err)
		}
		if f.flags&0x80 != 0 {
			trailer += strings.ToLower(string(f.msg))
			continue
		}
		msgs = append(msgs, f.msg)
	}
}

// TestWebFetchStream: a fetch route's server stream over Connect (JSON)
// and gRPC-Web, records written while the stream is open included, each
// message with its id.
func TestWebFetchStream(t *testing.T) {
	routes, topic := webRoutes(t)
	a := startFerry(t, routes)
	prod := kit.Client(t)
	ctx := testkit.Context(t, 30*time.Second)
	produce := func(vals ...string) {
		for _, v := range vals {
			if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: echo(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce("one", "two")
	url := "http://" + a.GRPCAddr() + "/example.FanoutService/FanoutServerStream"

	t.Run("connect", func(t *testing.T) {
		res := post(t, url, "application/connect+json", envelope(0, []byte(`{}`)), nil)
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		br := bufio.NewReader(res.Body)
		var got []string
		for len(got) < 3 {
			if len(got) == 2 {
				produce("three")
			}
			f, err := readFrame(br)
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			var m struct{ Message, MessageId string }
			if err := json.Unmarshal(f.msg, &m); err != nil || m.MessageId == "" {
				t.Fatalf("message %s: %v", f.msg, err)
			}
			got = append(got, m.Message)
		}
		if strings.Join(got, ",") != "one,two,three" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("grpc-web", func(t *testing.T) {
		res := post(t, url, "application/grpc-web+proto", envelope(0, nil), nil)
		br := bufio.NewReader(res.Body)
		var got []string
		for len(got) < 3 {
			f, err := readFrame(br)
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			got = append(got, unecho(f.msg))
		}
		if strings.Join(got, ",") != "one,two,three" {
			t.Fatalf("got %q", got)
		}
	})
}

// TestWebCORS: with allowed origins, a preflight from one of them is
// answered with what the protocols need (browsers list the headers
// lowercased and sorted, as here), and calls expose gRPC's status
// headers; other origins get no CORS headers. Without, no CORS at all.
func TestWebCORS(t *testing.T) {
	routes, _ := webRoutes(t)
	cfg := ferryConfig(t, routes)
	cfg.Listeners.GRPC.Web.CORS.AllowedOrigins = []string{"https://app.example.com"}
	cfg.Listeners.GRPC.Web.CORS.AllowedHeaders = []string{"X-Tenant"}
	cfg.Listeners.GRPC.Web.CORS.ExposedHeaders = []string{"X-Trace"}
	cfg.Listeners.GRPC.Web.CORS.MaxAge = time.Hour
	a := startConfig(t, cfg)
	url := "http://" + a.GRPCAddr() + echoSvc + "UnaryEcho"

	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type,x-tenant")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := preflight("https://app.example.com")
	if res.StatusCode/100 != 2 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		res.Header.Get("Access-Control-Max-Age") != "3600" {
		t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
	}
	allowed := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"content-type", "connect-protocol-version", "x-tenant", "authorization"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("preflight does not allow %s: %q", h, allowed)
		}
	}
	if res := preflight("https://evil.example.com"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin was allowed: %v", res.Header)
	}
	call := post(t, url, "application/grpc-web+proto", envelope(0, echo("cors")), map[string]string{"Origin": "https://app.example.com"})
	exposed := strings.ToLower(call.Header.Get("Access-Control-Expose-Headers"))
	for _, h := range []string{"grpc-status", "grpc-message", "x-trace"} {
		if !strings.Contains(exposed, h) {
			t.Errorf("%s is not exposed: %q", h, exposed)
		}
	}

	// CORS off: a preflight gets no CORS headers, the browser refuses.
	b := startFerry(t, routes)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodOptions, "http://"+b.GRPCAddr()+echoSvc+"UnaryEcho", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS is on by default: %v", res.Header)
	}
}

// TestHTTPListenerCORS: the REST APIs' listener has a CORS policy of its
// own.
func TestHTTPListenerCORS(t *testing.T) {
	cfg := ferryConfig(t, fetchRoute(kit.Topic(t, 1, nil), ""))
	cfg.KafkaAPI.Enabled = true
	cfg.Listeners.HTTP.Address = "127.0.0.1:0"
	cfg.Listeners.HTTP.CORS.AllowedOrigins = []string{"https://ops.example.com"}
	a := startConfig(t, cfg)
	req, _ := http.NewRequest(http.MethodOptions, "http://"+a.HTTPAddr()+"/v1/topics", nil)
	req.Header.Set("Origin", "https://ops.example.com")
	req.Header.Set("Access-Control-Request-Method", "GET")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "https://ops.example.com" {
		t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
	}
}

// TestWebDisabled: with web off, the port speaks gRPC only.
func TestWebDisabled(t *testing.T) {
	routes, _ := webRoutes(t)
	cfg := ferryConfig(t, routes)
	cfg.Listeners.GRPC.Web.Enabled = false
	a := startConfig(t, cfg)
	ctx := testkit.Context(t, 30*time.Second)
	if r := call(ctx, dial(t, a), "UnaryEcho", nil, "grpc"); r.err != nil {
		t.Fatal(r.err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.GRPCAddr()+echoSvc+"UnaryEcho", strings.NewReader(`{"message":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("a Connect call was served with web off")
		}
	}
}

// TestWebREST: REST paths from google.api.http annotations, path
// variables and a body field included, reach the route as the method's
// request message.
func TestWebREST(t *testing.T) {
	req, rep := testkit.Name(t, "req"), testkit.Name(t, "rep")
	routes := fmt.Sprintf(`
  - when: [{method: test.prices.Prices/*}]
    produce: {topic: %s, reply_to: %s, timeout: 20s}
`, req, rep)
	cfg := ferryConfig(t, routes)
	cfg.Protos = append(cfg.Protos, config.ProtoSource{Files: []string{"prices.proto"},
		// google/api/annotations.proto is compiled into Ferry.
		ImportPaths: []string{filepath.Join(root(t), "internal", "app", "testdata", "web")}})
	startBackend(t, req, func(reqs []string, _ map[string]string) reply { return reply{msgs: reqs} })
	a := startConfig(t, cfg)
	base := "http://" + a.GRPCAddr()

	// The back end answers a Quote holding the request's field 1, the
	// symbol taken from the path.
	res := post(t, base+"/v1/quotes/ACME", "application/json", []byte(`{"price":"5","note":"n"}`), nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(string(body), `{"symbol":"ACME"`) {
		t.Fatalf("POST: %d %s", res.StatusCode, body)
	}
	hres, err := http.Get(base + "/v1/quotes/XYZ")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(hres.Body)
	hres.Body.Close()
	if hres.StatusCode != 200 || !strings.HasPrefix(string(body), `{"symbol":"XYZ"`) {
		t.Fatalf("GET: %d %s", hres.StatusCode, body)
	}
	// The POST's record is the QuoteRequest: symbol from the path, quote
	// from the body.
	recs := readTopic(t, req, 2)
	top := wireFields(t, recs[0].Value)
	quote := wireFields(t, []byte(top[2]))
	if top[1] != "ACME" || quote[2] != "5" || quote[3] != "n" {
		t.Fatalf("record %x: symbol %q, quote %q; want ACME, price 5, note n", recs[0].Value, top[1], quote)
	}
	// A path no binding has.
	hres, err = http.Get(base + "/v1/nothing")
	if err != nil {
		t.Fatal(err)
	}
	hres.Body.Close()
	if hres.StatusCode != 404 {
		t.Fatalf("GET /v1/nothing: %d", hres.StatusCode)
	}
}

// wireFields decodes a protobuf message's fields, in whatever order they
// were written: bytes as they are, varints in decimal.
func wireFields(t *testing.T, b []byte) map[protowire.Number]string {
	t.Helper()
	out := map[protowire.Number]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("%x is not a protobuf message", b)
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				t.Fatalf("field %d does not decode", num)
			}
			out[num], b = string(v), b[m:]
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				t.Fatalf("field %d does not decode", num)
			}
			out[num], b = fmt.Sprint(v), b[m:]
		default:
			t.Fatalf("field %d has wire type %d", num, typ)
		}
	}
	return out
}
