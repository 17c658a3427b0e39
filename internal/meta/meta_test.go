package meta

import (
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

func TestFromHeader(t *testing.T) {
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
		k, v, err := FromHeader(tc.name, []byte(tc.value))
		if (err != nil) != tc.wantErr || k != tc.wantK || v != tc.wantV {
			t.Errorf("FromHeader(%q, %q) = %q %q %v", tc.name, tc.value, k, v, err)
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
	md := FromHeaders(hs, "meta:")
	want := metadata.MD{"x-trace": {"t1"}, "x-case": {"c"}, "raw-bin": {"\x00\x01\x02\xfe"}, "padded-bin": {"\x00\x01\x02\xfe"}}
	if !reflect.DeepEqual(md, want) {
		t.Errorf("FromHeaders = %v, want %v", md, want)
	}
	got := AppendHeaders(nil, metadata.MD{"b": {"2"}, "a": {"1", "1b"}, "raw-bin": {"\x00\x01"}, "content-type": {"application/grpc"}}, "meta:", nil)
	wantHs := []kgo.RecordHeader{
		{Key: "meta:a", Value: []byte("1")}, {Key: "meta:a", Value: []byte("1b")},
		{Key: "meta:b", Value: []byte("2")}, {Key: "meta:raw-bin", Value: []byte("AAE")},
	}
	if !reflect.DeepEqual(got, wantHs) {
		t.Errorf("AppendHeaders = %v, want %v", got, wantHs)
	}
	// keep filters, and what goes out comes back.
	out := AppendHeaders(nil, metadata.MD{"keep": {"k"}, "drop": {"d"}, "x-bin": {"\xff\x00"}}, "m:", func(k string) bool { return k != "drop" })
	if back := FromHeaders(out, "m:"); !reflect.DeepEqual(back, metadata.MD{"keep": {"k"}, "x-bin": {"\xff\x00"}}) {
		t.Errorf("round trip = %v", back)
	}
}

func FuzzFromHeader(f *testing.F) {
	f.Add("x-trace", []byte("v"))
	f.Add("raw-bin", []byte("AAEC/g=="))
	f.Add("Bad Key", []byte{0xff})
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		if k, _, err := FromHeader(name, value); err == nil && CheckKey(k) != nil {
			t.Fatalf("accepted invalid key %q", k)
		}
	})
}
