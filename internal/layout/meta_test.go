package layout

import (
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"

	"github.com/ferryproxy/ferry/internal/config"
)

func TestMetadataFromHeader(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		wantK       string
		wantV       string
		wantErr     bool
	}{
		{"X-Trace", "abc", "x-trace", "abc", false},
		{"raw-bin", "AAEC/g", "raw-bin", "\x00\x01\x02\xfe", false},
		{"raw-bin", "AAEC/g==", "raw-bin", "\x00\x01\x02\xfe", false},
		{"raw-bin", "***", "", "", true},
		{"grpc-status", "0", "", "", true},
		{":path", "/x", "", "", true},
		{"bad key", "v", "", "", true},
		{"", "v", "", "", true},
	} {
		k, v, err := metadataFromHeader(tc.name, []byte(tc.value))
		if (err != nil) != tc.wantErr || k != tc.wantK || v != tc.wantV {
			t.Errorf("metadataFromHeader(%q, %q) = %q %q %v", tc.name, tc.value, k, v, err)
		}
	}
}

func TestMetadataBothWays(t *testing.T) {
	hs := []kgo.RecordHeader{
		{Key: "zilla:service", Value: []byte("s")},
		{Key: "meta:x-trace", Value: []byte("t1")},
		{Key: "meta:X-Case", Value: []byte("c")},
		{Key: "meta:raw-bin", Value: []byte("AAEC/g")},
		{Key: "meta:padded-bin", Value: []byte("AAEC/g==")},
		{Key: "meta:grpc-timeout", Value: []byte("1S")},
		{Key: "meta:bad-bin", Value: []byte("***")},
	}
	md := MetadataFromHeaders(hs, "meta:")
	want := metadata.MD{"x-trace": {"t1"}, "x-case": {"c"}, "raw-bin": {"\x00\x01\x02\xfe"}, "padded-bin": {"\x00\x01\x02\xfe"}}
	if !reflect.DeepEqual(md, want) {
		t.Errorf("MetadataFromHeaders = %v, want %v", md, want)
	}
	if md := MetadataFromHeaders(nil, "meta:"); md == nil {
		t.Error("MetadataFromHeaders returned nil")
	}
	got := appendMetadata(nil, metadata.MD{"b": {"2"}, "a": {"1", "1b"}, "raw-bin": {"\x00\x01"}, "content-type": {"application/grpc"}}, "meta:", nil)
	wantHs := []kgo.RecordHeader{
		{Key: "meta:a", Value: []byte("1")}, {Key: "meta:a", Value: []byte("1b")},
		{Key: "meta:b", Value: []byte("2")}, {Key: "meta:raw-bin", Value: []byte("AAE")},
	}
	if !reflect.DeepEqual(got, wantHs) {
		t.Errorf("appendMetadata = %v, want %v", got, wantHs)
	}
	// keep filters, and what goes out comes back.
	out := appendMetadata(nil, metadata.MD{"keep": {"k"}, "drop": {"d"}, "x-bin": {"\xff\x00"}}, "m:", func(k string) bool { return k != "drop" })
	if back := MetadataFromHeaders(out, "m:"); !reflect.DeepEqual(back, metadata.MD{"keep": {"k"}, "x-bin": {"\xff\x00"}}) {
		t.Errorf("round trip = %v", back)
	}
}

// TestConnectionHeadersNotRead: a record written by another producer with
// HTTP/1.1's connection-specific headers among its meta: headers does not
// hand them to a back end's server, whose HTTP/2 would refuse the call.
func TestConnectionHeadersNotRead(t *testing.T) {
	hs := []kgo.RecordHeader{
		{Key: "meta:connection", Value: []byte("keep-alive")},
		{Key: "meta:keep-alive", Value: []byte("timeout=5")},
		{Key: "meta:x-tenant", Value: []byte("blue")},
	}
	if md := MetadataFromHeaders(hs, "meta:"); !reflect.DeepEqual(md, metadata.MD{"x-tenant": {"blue"}}) {
		t.Fatalf("metadata %v", md)
	}
}

func TestForwarded(t *testing.T) {
	for k, want := range map[string]bool{
		"x-trace": true, "idempotency-key": true, ":authority": false, "grpc-timeout": false,
		"grpc-accept-encoding": true, "te": false, "content-type": false, "user-agent": false,
		"authorization": false, "connection": false, "keep-alive": false, "upgrade": false,
	} {
		if got := forwarded(k, false); got != want {
			t.Errorf("forwarded(%q) = %v, want %v", k, got, want)
		}
	}
	if !forwarded("authorization", true) {
		t.Error("authorization is not forwarded when the route allows it")
	}
}

// FuzzMetadataFromHeader: a meta: header from Kafka never panics, and what
// it accepts is a valid metadata key whose value written again reads the
// same.
func FuzzMetadataFromHeader(f *testing.F) {
	f.Add("x-trace", []byte("v"))
	f.Add("raw-bin", []byte("AAEC/g=="))
	f.Add("Bad Key", []byte{0xff})
	f.Add("X-BIN", []byte("AA"))
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		k, v, err := metadataFromHeader(name, value)
		if err != nil {
			return
		}
		if checkKey(k) != nil {
			t.Fatalf("accepted invalid key %q", k)
		}
		hs := appendMetadata(nil, metadata.MD{k: {v}}, "meta:", nil)
		back := MetadataFromHeaders(hs, "meta:")
		if got := back[k]; len(got) != 1 || got[0] != v {
			t.Fatalf("%q %q read as %q %q, written again as %v and read as %q", name, value, k, v, hs, got)
		}
	})
}

// FuzzMetadataFromHeaders: any headers read as metadata that is written
// back as headers reading the same.
func FuzzMetadataFromHeaders(f *testing.F) {
	f.Add("meta:a", []byte("1"), "meta:A", []byte("2"), "meta:x-bin", []byte("AAE="))
	f.Add("meta:", []byte(""), "zilla:status", []byte("0"), "meta:grpc-x", []byte("y"))
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte) {
		hs := []kgo.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}, {Key: k3, Value: v3}}
		md := MetadataFromHeaders(hs, "meta:")
		for k := range md {
			if checkKey(k) != nil {
				t.Fatalf("accepted invalid key %q", k)
			}
		}
		if back := MetadataFromHeaders(appendMetadata(nil, md, "meta:", nil), "meta:"); !reflect.DeepEqual(back, md) {
			t.Fatalf("%v read as %v, then as %v", hs, md, back)
		}
	})
}

// TestZillaJoinedValues: Zilla joins the values of a repeated metadata key
// into one header ("v1, v2"); Ferry writes one header per value. Each
// reads the other's: Ferry reads Zilla's header as the single value
// "v1, v2".
func TestZillaJoinedValues(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	hs := []kgo.RecordHeader{
		{Key: "zilla:correlation-id", Value: []byte("id")},
		{Key: "meta:x-multi", Value: []byte("v1, v2")},
	}
	want := []string{"v1, v2"}
	if got := MetadataFromHeaders(hs, "meta:")["x-multi"]; !reflect.DeepEqual(got, want) {
		t.Errorf("request metadata x-multi = %q, want %q", got, want)
	}
	if got := l.ServerMetadata(hs, "id")["x-multi"]; !reflect.DeepEqual(got, want) {
		t.Errorf("server metadata x-multi = %q, want %q", got, want)
	}
	_, rep, _ := l.ParseReply(&kgo.Record{Value: []byte{}, Headers: hs}, nil)
	if got := rep.Meta["x-multi"]; !reflect.DeepEqual(got, want) {
		t.Errorf("response metadata x-multi = %q, want %q", got, want)
	}
	// Ferry's own: one header per value, read back as two values.
	out := appendMetadata(nil, metadata.MD{"x-multi": {"v1", "v2"}}, "meta:", nil)
	if got := MetadataFromHeaders(out, "meta:")["x-multi"]; !reflect.DeepEqual(got, []string{"v1", "v2"}) {
		t.Errorf("Ferry's headers %v read as %q", out, got)
	}
}

// TestAcceptEncodingWrittenNotRead: grpc-accept-encoding is written as a
// meta: header, as Zilla does, but a reserved key never becomes metadata
// again: a back end does not pass it to its server, a front end not to its
// client.
func TestAcceptEncodingWrittenNotRead(t *testing.T) {
	l := New(config.DefaultHeaderNames())
	hs := l.RequestHeaders(nil, Request{Service: "s", Method: "m", ReplyTo: "r", CorrelationID: "id"},
		metadata.MD{"grpc-accept-encoding": {"gzip"}, "grpc-timeout": {"1S"}, "x": {"1"}}, false)
	var got []string
	for _, h := range hs {
		if strings.HasPrefix(h.Key, "meta:") {
			got = append(got, h.Key+"="+string(h.Value))
		}
	}
	if want := []string{"meta:grpc-accept-encoding=gzip", "meta:x=1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("meta: headers %q, want %q", got, want)
	}
	if md := l.ServerMetadata(hs, "id"); md["grpc-accept-encoding"] != nil || md["x"] == nil {
		t.Errorf("server metadata %v: grpc-accept-encoding must not be read back", md)
	}
	_, rep, _ := l.ParseReply(&kgo.Record{Key: []byte("id"), Value: []byte{}, Headers: hs}, nil)
	if rep.Meta["grpc-accept-encoding"] != nil {
		t.Errorf("response metadata %v: grpc-accept-encoding must not be read back", rep.Meta)
	}
}
