package layout

import (
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestCorrelationIDVector is the test vector of the record layout spec.
func TestCorrelationIDVector(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	prefix, idempotent := CorrelationPrefix(metadata.Pairs(IdempotencyKey, "59410e57-3e0f-4b61-9328-f645a7968ac8"))
	if !idempotent {
		t.Fatal("idempotency-key not taken")
	}
	got := CorrelationID(prefix, l.CorrelationSuffix("example.EchoService", "EchoUnary", "responses",
		config.Headers{{Name: "zilla:identity", Value: "test"}}))
	if want := "59410e57-3e0f-4b61-9328-f645a7968ac8-479f2c3fb58bc3f04bbe15440a657670"; got != want {
		t.Errorf("correlation id = %s, want %s", got, want)
	}
	// No reply topic and no overrides: the md5 of nothing.
	if got := l.CorrelationSuffix("s", "m", "", nil); got != "d41d8cd98f00b204e9800998ecf8427e" {
		t.Errorf("empty md5 input gives %s", got)
	}
	// Override names are not hashed, header names are.
	a := l.CorrelationSuffix("s", "m", "r", config.Headers{{Name: "x", Value: "v"}})
	b := l.CorrelationSuffix("s", "m", "r", config.Headers{{Name: "y", Value: "v"}})
	other := config.DefaultHeaderNames()
	other.Service = "x:service"
	c := New(other).CorrelationSuffix("s", "m", "r", config.Headers{{Name: "x", Value: "v"}})
	if a != b || a == c {
		t.Errorf("override names must not count and header names must: %s %s %s", a, b, c)
	}
}

// TestCorrelationPrefix: without an idempotency-key (or with an empty
// one) the prefix is a fresh UUIDv4.
func TestCorrelationPrefix(t *testing.T) {
	for _, md := range []metadata.MD{nil, {}, metadata.Pairs(IdempotencyKey, "")} {
		p, idempotent := CorrelationPrefix(md)
		if u, err := uuid.Parse(p); idempotent || err != nil || u.Version() != 4 || len(p) != 36 {
			t.Errorf("CorrelationPrefix(%v) = %q %v, want a UUIDv4", md, p, idempotent)
		}
		if q, _ := CorrelationPrefix(md); q == p {
			t.Errorf("two calls got the same prefix %q", p)
		}
	}
	if p, ok := CorrelationPrefix(metadata.MD{IdempotencyKey: {"k1", "k2"}}); p != "k1" || !ok {
		t.Errorf("prefix = %q %v, want the first idempotency-key", p, ok)
	}
}

func TestRequestKey(t *testing.T) {
	if got := RequestKey("", "id"); string(got) != "id" {
		t.Errorf("key = %q, want the correlation id", got)
	}
	if got := RequestKey("k", "id"); string(got) != "k" {
		t.Errorf("key = %q, want the route's key", got)
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		code     string
		has      bool
		msg      string
		want     codes.Code
		wantMsgs string
	}{
		{"", false, "", codes.OK, ""},
		{"0", true, "", codes.OK, ""},
		{"5", true, "gone", codes.NotFound, "gone"},
		{" 14 ", true, "later", codes.Unavailable, "later"},
		{"99", true, "odd", codes.Unknown, "odd"},
		{"-1", true, "neg", codes.Internal, `backend replied with status "-1", which is not a gRPC status code (message "neg")`},
		{"abc", true, "", codes.Internal, `backend replied with status "abc", which is not a gRPC status code (message "")`},
	} {
		c, m := parseStatus(tc.code, tc.has, tc.msg)
		if c != tc.want || m != tc.wantMsgs {
			t.Errorf("parseStatus(%q) = %v %q, want %v %q", tc.code, c, m, tc.want, tc.wantMsgs)
		}
	}
}

// callMetadata has every kind of entry a call's metadata can hold.
func callMetadata() metadata.MD {
	return metadata.MD{
		IdempotencyKey: {"key-1"},
		"x-trace":      {"t"},
		"multi":        {"1", "2", "3"},
		"raw-bin":      {"\x00\xff\x01"},
		"multi-bin":    {"\x01", "", "\xfe\xfd"},
		"empty":        {""},
	}
}

// TestRequestRoundTrip: what a front end writes, a back end reads as the
// same call.
func TestRequestRoundTrip(t *testing.T) {
	for _, names := range []config.HeaderNames{config.DefaultHeaderNames(), customNames()} {
		l := New(names)
		md := callMetadata()
		md.Set("authorization", "secret")
		md.Set("grpc-timeout", "1S")
		prefix, _ := CorrelationPrefix(md)
		req := Request{Service: "pkg.Svc", Method: "M", ReplyTo: "replies"}
		req.CorrelationID = CorrelationID(prefix, l.CorrelationSuffix(req.Service, req.Method, req.ReplyTo, nil))
		hs := l.RequestHeaders(OverrideHeaders(config.Headers{{Name: "o", Value: "v"}}), req, md, false)
		if got := l.ParseRequest(hs); got != req {
			t.Errorf("request %+v read as %+v", req, got)
		}
		if p := req.Path(); p != "/pkg.Svc/M" {
			t.Errorf("path = %q", p)
		}
		got := l.ServerMetadata(hs, req.CorrelationID)
		want := callMetadata()
		want.Set(CorrelationIDMetadata, req.CorrelationID)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("server metadata = %v, want %v", got, want)
		}
		if !strings.HasPrefix(req.CorrelationID, "key-1-") {
			t.Errorf("correlation id %q does not start with the idempotency-key", req.CorrelationID)
		}
		// Without a client idempotency-key, the server gets the
		// correlation id as one.
		delete(md, IdempotencyKey)
		hs = l.RequestHeaders(nil, req, md, true)
		got = l.ServerMetadata(hs, req.CorrelationID)
		if v := got.Get(IdempotencyKey); len(v) != 1 || v[0] != req.CorrelationID {
			t.Errorf("idempotency-key = %q, want the correlation id", v)
		}
		if v := got.Get("authorization"); len(v) != 1 || v[0] != "secret" {
			t.Errorf("authorization = %q, want it forwarded", v)
		}
		// A one-way call carries no layout headers.
		oneWay := l.RequestHeaders(nil, Request{Service: "pkg.Svc", Method: "M", CorrelationID: "id"}, md, false)
		if got := l.ParseRequest(oneWay); got != (Request{}) {
			t.Errorf("one-way request read as %+v", got)
		}
	}
}

// TestReplyRoundTrip: what a back end writes, a front end reads as the
// same response: metadata, messages and status.
func TestReplyRoundTrip(t *testing.T) {
	for _, names := range []config.HeaderNames{config.DefaultHeaderNames(), customNames()} {
		l := New(names)
		header := callMetadata()
		trailer := metadata.MD{"t": {"1"}, "t-bin": {"\x00"}, "grpc-status": {"5"}}
		rm := ResponseMetadata{Header: l.MetadataHeaders(header)}
		id, rep, ok := l.ParseReply(l.ReplyRecord("r", "id-1", rm, []byte("m")), nil)
		if !ok || id != "id-1" || rep.End || string(rep.Value) != "m" || !reflect.DeepEqual(rep.Meta, header) {
			t.Errorf("reply read as %q %+v %v", id, rep, ok)
		}
		rm.Trailer = l.MetadataHeaders(trailer)
		all := callMetadata()
		all["t"], all["t-bin"] = []string{"1"}, []string{"\x00"}
		for code := codes.OK; code <= codes.Unauthenticated; code++ {
			for _, msg := range []string{"", "why ✓"} {
				rec := l.FinalRecord("r", "id-2", rm, code, msg)
				id, rep, ok := l.ParseReply(rec, nil)
				wantMsg := msg
				if code == codes.OK {
					wantMsg = ""
				}
				if !ok || id != "id-2" || !rep.End || rep.Value != nil || rep.Code != code || rep.Message != wantMsg || !reflect.DeepEqual(rep.Meta, all) {
					t.Errorf("final %v %q read as %q %+v %v", code, msg, id, rep, ok)
				}
			}
		}
		id, rep, ok = l.ParseReply(l.NoMethodRecord("r", "id-3"), nil)
		if !ok || id != "id-3" || rep.Code != StatusNoMethod || StatusNoMethod != 13 || rep.Meta != nil {
			t.Errorf("no-method reply read as %q %+v %v", id, rep, ok)
		}
	}
}

// TestParseReplySkipped: headers that cannot be metadata are reported.
func TestParseReplySkipped(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	var skipped []string
	_, rep, _ := l.ParseReply(&kgo.Record{Key: []byte("id"), Value: []byte{}, Headers: []kgo.RecordHeader{
		{Key: "meta:ok", Value: []byte("1")}, {Key: "meta:bad key", Value: []byte("2")}, {Key: "meta:x-bin", Value: []byte("!")}, {Key: "other", Value: []byte("3")},
	}}, func(h string, _ error) { skipped = append(skipped, h) })
	if !reflect.DeepEqual(skipped, []string{"meta:bad key", "meta:x-bin"}) || !reflect.DeepEqual(rep.Meta, metadata.MD{"ok": {"1"}}) {
		t.Errorf("skipped %q, kept %v", skipped, rep.Meta)
	}
}

// TestFinalRecordAsZilla: once a reply record carried the response
// headers, the final record of a call without trailers is Zilla's:
// correlation id and status (and message on error) only. Without a reply
// record, it carries the headers, which the front end needs then; trailers
// are always written.
func TestFinalRecordAsZilla(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	h := l.MetadataHeaders(metadata.MD{"x-h": {"a"}})
	tr := l.MetadataHeaders(metadata.MD{"x-t": {"b"}})
	id := []kgo.RecordHeader{{Key: "zilla:correlation-id", Value: []byte("id")}}
	ok := kgo.RecordHeader{Key: "zilla:status", Value: []byte("0")}
	for _, tc := range []struct {
		name string
		m    ResponseMetadata
		want []kgo.RecordHeader
	}{
		{"after replies", ResponseMetadata{Header: h, HeaderWritten: true}, append(id, ok)},
		{"after replies with trailers", ResponseMetadata{Header: h, Trailer: tr, HeaderWritten: true}, append(append(id, tr...), ok)},
		{"no reply", ResponseMetadata{Header: h}, append(append(id, h...), ok)},
		{"no reply with trailers", ResponseMetadata{Header: h, Trailer: tr}, append(append(append(id, h...), tr...), ok)},
	} {
		if got := l.FinalRecord("r", "id", tc.m, codes.OK, "").Headers; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFinalMetadataDoesNotAlias: building the final record never changes
// the header metadata reply records share.
func TestFinalMetadataDoesNotAlias(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	h := make([]kgo.RecordHeader, 1, 8)
	h[0] = kgo.RecordHeader{Key: "meta:a", Value: []byte("1")}
	rm := ResponseMetadata{Header: h, Trailer: []kgo.RecordHeader{{Key: "meta:b", Value: []byte("2")}}}
	l.FinalRecord("r", "id", rm, codes.OK, "")
	if spare := h[:2]; spare[1].Key != "" {
		t.Errorf("the final record wrote %q into the header metadata's spare room", spare[1].Key)
	}
}

// FuzzParseReply: any reply record reads without panicking, as a valid
// status and metadata; and a final record written from any id, code and
// message reads back as them.
func FuzzParseReply(f *testing.F) {
	f.Add("zilla:correlation-id", []byte("id"), "zilla:status", []byte("5"), "meta:X-Bin", []byte("AAE="), true, "id", uint32(5), "msg")
	f.Add("zilla:message", []byte("m"), "zilla:status", []byte(" 14 "), "meta:", []byte(""), false, "", uint32(0), "")
	f.Add("zilla:status", []byte("99"), "zilla:status", []byte("abc"), "meta:bad key", []byte{0xff}, true, "a-b", uint32(99), "\xff")
	l := New(config.DefaultHeaderNames())
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte, null bool, id string, code uint32, msg string) {
		rec := &kgo.Record{Key: []byte(id), Headers: []kgo.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}, {Key: k3, Value: v3}}}
		if !null {
			rec.Value = []byte{}
		}
		if gotID, rep, ok := l.ParseReply(rec, nil); ok {
			if gotID == "" || rep.End != null || rep.Code > codes.Unauthenticated || (!rep.End && rep.Code != codes.OK) {
				t.Fatalf("read %q %+v", gotID, rep)
			}
			for k := range rep.Meta {
				if checkKey(k) != nil {
					t.Fatalf("accepted invalid key %q", k)
				}
			}
		}
		if id == "" || code > uint32(codes.Unauthenticated) {
			return
		}
		gotID, rep, ok := l.ParseReply(l.FinalRecord("r", id, ResponseMetadata{}, codes.Code(code), msg), nil)
		wantMsg := msg
		if code == 0 {
			wantMsg = ""
		}
		if !ok || gotID != id || !rep.End || rep.Code != codes.Code(code) || rep.Message != wantMsg {
			t.Fatalf("final %q %d %q read as %q %+v %v", id, code, msg, gotID, rep, ok)
		}
	})
}

// FuzzParseRequest: any request headers read without panicking; a request
// written from any service, method, reply topic and correlation id reads
// back as it, with the client's idempotency-key and metadata.
func FuzzParseRequest(f *testing.F) {
	f.Add("pkg.Svc", "M", "replies", "key-1", "x-trace", "v")
	f.Add("", "", "r", "", "X-Bin", "\xff")
	f.Add("zilla:service", "meta:a", "zilla:reply-to", "-", "grpc-timeout", "1S")
	l := New(config.DefaultHeaderNames())
	f.Fuzz(func(t *testing.T, service, method, replyTo, idemKey, mk, mv string) {
		l.ParseRequest([]kgo.RecordHeader{{Key: service, Value: []byte(method)}, {Key: replyTo, Value: []byte(idemKey)}})
		md := metadata.MD{}
		if idemKey != "" {
			md[IdempotencyKey] = []string{idemKey}
		}
		if checkKey(mk) == nil && mk != "authorization" && mk != IdempotencyKey && mk != CorrelationIDMetadata {
			md[mk] = []string{mv}
		}
		prefix, idempotent := CorrelationPrefix(md)
		if idempotent != (idemKey != "") || (idempotent && prefix != idemKey) {
			t.Fatalf("prefix %q %v for idempotency-key %q", prefix, idempotent, idemKey)
		}
		req := Request{Service: service, Method: method, ReplyTo: replyTo}
		req.CorrelationID = CorrelationID(prefix, l.CorrelationSuffix(service, method, replyTo, nil))
		hs := l.RequestHeaders(nil, req, md, false)
		if replyTo == "" {
			req = Request{}
		}
		if got := l.ParseRequest(hs); got != req {
			t.Fatalf("request %+v read as %+v", req, got)
		}
		got := l.ServerMetadata(hs, "id")
		for k, vs := range md {
			if !reflect.DeepEqual(got[k], vs) {
				t.Fatalf("metadata %q = %q read as %q", k, vs, got[k])
			}
		}
	})
}
