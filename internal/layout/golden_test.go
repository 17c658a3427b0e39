package layout

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

// The golden files hold records and parsed calls as the front end and the
// back end write and read them: every record built here must be byte for
// byte the one in the file, and every record must read the same. A change
// of the layout shows as a change of these files (go test -update).

func dumpRecord(b *strings.Builder, name string, rec *kgo.Record, withTopic bool) {
	fmt.Fprintf(b, "== %s\n", name)
	if withTopic {
		fmt.Fprintf(b, "topic %q\n", rec.Topic)
	}
	if rec.Key == nil {
		b.WriteString("key nil\n")
	} else {
		fmt.Fprintf(b, "key %q\n", rec.Key)
	}
	if rec.Value == nil {
		b.WriteString("value nil\n")
	} else {
		fmt.Fprintf(b, "value %q\n", rec.Value)
	}
	for _, h := range rec.Headers {
		fmt.Fprintf(b, "header %q %q\n", h.Key, h.Value)
	}
}

func dumpMetadata(b *strings.Builder, md metadata.MD) {
	if md == nil {
		b.WriteString("meta nil\n")
		return
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "meta %q %q\n", k, md[k])
	}
}

// requestMetadata has an idempotency-key, so the correlation id is the
// same on every run, and every kind of entry: transport ones, repeated and
// binary keys, authorization, an empty value.
func requestMetadata() metadata.MD {
	return metadata.MD{
		"idempotency-key":      {"59410e57-3e0f-4b61-9328-f645a7968ac8"},
		"x-trace":              {"t1"},
		"multi":                {"1", "2"},
		"raw-bin":              {"\x00\x01\xfe"},
		"authorization":        {"Bearer secret"},
		"grpc-timeout":         {"1S"},
		"grpc-accept-encoding": {"gzip"},
		"content-type":         {"application/grpc"},
		"user-agent":           {"grpc-go"},
		"te":                   {"trailers"},
		":authority":           {"localhost"},
		"a":                    {""},
	}
}

func customNames() config.HeaderNames {
	return config.HeaderNames{Service: "x:svc", Method: "x:m", ReplyTo: "x:rt", CorrelationID: "x:id", Status: "x:st", Message: "x:msg", MetaPrefix: "md-"}
}

// update rewrites the golden files with what the tests produce: go test
// ./internal/layout -update, then review the diff.
var update = flag.Bool("update", false, "rewrite the golden files")

func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got == string(want) {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s differs at line %d:\ngot  %s\nwant %s", file, i+1, g, w)
		}
	}
}

// TestGoldenFrontEnd: request records as a produce route writes them, and
// reply records as its reader reads them.
func TestGoldenFrontEnd(t *testing.T) {
	var b strings.Builder
	for _, tc := range []struct {
		name         string
		names        config.HeaderNames
		key, replyTo string
		overrides    config.Headers
		auth         bool
	}{
		{"request reply", config.DefaultHeaderNames(), "", "echo-replies", config.Headers{{Name: "zilla:identity", Value: "test"}, {Name: "b", Value: "2"}}, false},
		{"request reply custom", customNames(), "k1", "echo-replies", config.Headers{{Name: "o", Value: "v"}}, true},
		{"one way", config.DefaultHeaderNames(), "", "", config.Headers{{Name: "zilla:identity", Value: "test"}}, false},
	} {
		l := New(tc.names)
		md := requestMetadata()
		prefix, idempotent := CorrelationPrefix(md)
		if !idempotent {
			t.Fatal("the idempotency-key was not taken")
		}
		id := CorrelationID(prefix, l.CorrelationSuffix("grpc.examples.echo.Echo", "UnaryEcho", tc.replyTo, tc.overrides))
		key := RequestKey(tc.key, id)
		hs := l.RequestHeaders(OverrideHeaders(tc.overrides), Request{Service: "grpc.examples.echo.Echo", Method: "UnaryEcho", ReplyTo: tc.replyTo, CorrelationID: id}, md, tc.auth)
		dumpRecord(&b, tc.name+" message", &kgo.Record{Key: key, Value: []byte("hello"), Headers: hs}, false)
		dumpRecord(&b, tc.name+" end", &kgo.Record{Key: key, Headers: hs}, false)
	}
	for _, n := range []config.HeaderNames{config.DefaultHeaderNames(), customNames()} {
		l := New(n)
		for i, rec := range []*kgo.Record{
			{Key: []byte("id-1"), Value: []byte("resp"), Headers: []kgo.RecordHeader{{Key: n.CorrelationID, Value: []byte("id-1")}, {Key: n.MetaPrefix + "x-h", Value: []byte("a")}, {Key: n.MetaPrefix + "x-h", Value: []byte("b")}, {Key: n.MetaPrefix + "h-bin", Value: []byte("AQI")}, {Key: n.MetaPrefix + "Bad Key", Value: []byte("x")}, {Key: n.MetaPrefix + "p-bin", Value: []byte("AQI=")}, {Key: n.MetaPrefix + "grpc-status", Value: []byte("0")}}},
			{Key: []byte("id-2"), Value: []byte{}},
			{Key: []byte("k"), Headers: []kgo.RecordHeader{{Key: n.CorrelationID, Value: []byte("id-3")}, {Key: n.Status, Value: []byte("5")}, {Key: n.Message, Value: []byte("not found")}}},
			{Key: []byte("id-4"), Headers: []kgo.RecordHeader{{Key: n.Status, Value: []byte(" 14 ")}, {Key: n.Message, Value: []byte("later")}}},
			{Key: []byte("id-5"), Headers: []kgo.RecordHeader{{Key: n.Status, Value: []byte("abc")}, {Key: n.Message, Value: []byte("m")}}},
			{Key: []byte("id-6"), Headers: []kgo.RecordHeader{{Key: n.Status, Value: []byte("99")}}},
			{Key: []byte("id-7")},
			{Headers: []kgo.RecordHeader{{Key: n.Status, Value: []byte("0")}}},
			{Key: []byte("id-8"), Headers: []kgo.RecordHeader{{Key: n.Message, Value: []byte("only message")}, {Key: n.Status, Value: []byte("0")}}},
		} {
			id, rep, ok := l.ParseReply(rec, nil)
			fmt.Fprintf(&b, "== reply %s %d\n", n.CorrelationID, i)
			if !ok {
				b.WriteString("skipped\n")
				continue
			}
			fmt.Fprintf(&b, "id %q end %v code %d message %q\n", id, rep.End, rep.Code, rep.Message)
			if rep.Value == nil {
				b.WriteString("value nil\n")
			} else {
				fmt.Fprintf(&b, "value %q\n", rep.Value)
			}
			dumpMetadata(&b, rep.Meta)
		}
	}
	checkGolden(t, "testdata/frontend.golden", b.String())
}

// TestGoldenBackEnd: reply and final records as a back end writes them,
// and request records as it reads them.
func TestGoldenBackEnd(t *testing.T) {
	var b strings.Builder
	header := metadata.MD{"x-h": {"a", "b"}, "h-bin": {"\x01\x02"}, "content-type": {"application/grpc"}, "grpc-accept-encoding": {"gzip"}, "c": {"3"}}
	trailer := metadata.MD{"x-t": {"t"}, "grpc-status": {"0"}, "t-bin": {"\xff"}}
	for _, n := range []config.HeaderNames{config.DefaultHeaderNames(), customNames()} {
		l := New(n)
		rm := ResponseMetadata{Header: l.MetadataHeaders(header)}
		dumpRecord(&b, n.CorrelationID+" reply", l.ReplyRecord("replies", "id-1", rm, []byte("resp")), true)
		dumpRecord(&b, n.CorrelationID+" empty reply", l.ReplyRecord("replies", "id-1", rm, []byte{}), true)
		rm.Trailer = l.MetadataHeaders(trailer)
		for _, tc := range []struct {
			name string
			rec  *kgo.Record
		}{
			{"final ok", l.FinalRecord("replies", "id-2", rm, codes.OK, "")},
			{"final ok message", l.FinalRecord("replies", "id-2", rm, codes.OK, "ignored")},
			{"final not found", l.FinalRecord("replies", "id-2", rm, codes.NotFound, "not found")},
			{"final internal no message", l.FinalRecord("replies", "id-2", ResponseMetadata{}, codes.Internal, "")},
			{"reject", l.NoMethodRecord("replies", "id-2")},
			{"final unavailable trailer only", l.FinalRecord("replies", "id-2", ResponseMetadata{Trailer: rm.Trailer}, codes.Unavailable, "down")},
			{"final ok after replies", l.FinalRecord("replies", "id-2", ResponseMetadata{Header: rm.Header, Trailer: rm.Trailer, HeaderWritten: true}, codes.OK, "")},
			{"final ok after replies no trailer", l.FinalRecord("replies", "id-2", ResponseMetadata{Header: rm.Header, HeaderWritten: true}, codes.OK, "")},
			{"final not found after replies no trailer", l.FinalRecord("replies", "id-2", ResponseMetadata{Header: rm.Header, HeaderWritten: true}, codes.NotFound, "gone")},
		} {
			dumpRecord(&b, n.CorrelationID+" "+tc.name, tc.rec, true)
		}
		for i, rec := range []*kgo.Record{
			{Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{
				{Key: n.Service, Value: []byte("pkg.Svc")}, {Key: n.Method, Value: []byte("M")}, {Key: n.ReplyTo, Value: []byte("rt")}, {Key: n.CorrelationID, Value: []byte("id-9")},
				{Key: n.MetaPrefix + "x-trace", Value: []byte("t")}, {Key: n.MetaPrefix + "Multi", Value: []byte("1")}, {Key: n.MetaPrefix + "multi", Value: []byte("2")},
				{Key: n.MetaPrefix + "raw-bin", Value: []byte("AAH+")}, {Key: n.MetaPrefix + "bad-bin", Value: []byte("***")}, {Key: n.MetaPrefix + "grpc-timeout", Value: []byte("1S")},
				{Key: n.MetaPrefix + "idempotency-key", Value: []byte("client-key")},
			}},
			{Value: []byte("v"), Headers: []kgo.RecordHeader{
				{Key: n.Service, Value: []byte("pkg.Svc")}, {Key: n.Method, Value: []byte("M")}, {Key: n.CorrelationID, Value: []byte("id-10")}, {Key: n.CorrelationID, Value: []byte("id-11")},
			}},
			{Key: []byte("id-12"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: n.Service, Value: []byte("pkg.Svc")}}},
		} {
			r := l.ParseRequest(rec.Headers)
			if r.ReplyTo == "" {
				r.ReplyTo = "default-replies" // the back end's reply_to
			}
			fmt.Fprintf(&b, "== request %s %d\n", n.CorrelationID, i)
			fmt.Fprintf(&b, "id %q service %q method %q reply-to %q\n", r.CorrelationID, r.Service, r.Method, r.ReplyTo)
			if r.CorrelationID == "" {
				continue
			}
			dumpMetadata(&b, l.ServerMetadata(rec.Headers, r.CorrelationID))
			fmt.Fprintf(&b, "path %q\n", r.Path())
		}
	}
	checkGolden(t, "testdata/backend.golden", b.String())
}
