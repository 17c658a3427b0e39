package produce

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/meta"
)

// TestCorrelationIDVector is the test vector of the record layout spec.
func TestCorrelationIDVector(t *testing.T) {
	suffix := CorrelationSuffix(config.DefaultHeaderNames(), "example.EchoService", "EchoUnary", "responses",
		config.Headers{{Name: "zilla:identity", Value: "test"}})
	got := "59410e57-3e0f-4b61-9328-f645a7968ac8" + "-" + suffix
	if want := "59410e57-3e0f-4b61-9328-f645a7968ac8-479f2c3fb58bc3f04bbe15440a657670"; got != want {
		t.Errorf("correlation id = %s, want %s", got, want)
	}
	// No reply topic and no overrides: the md5 of nothing.
	if got := CorrelationSuffix(config.DefaultHeaderNames(), "s", "m", "", nil); got != "d41d8cd98f00b204e9800998ecf8427e" {
		t.Errorf("empty md5 input gives %s", got)
	}
	// Override names are not hashed, header names are.
	a := CorrelationSuffix(config.DefaultHeaderNames(), "s", "m", "r", config.Headers{{Name: "x", Value: "v"}})
	b := CorrelationSuffix(config.DefaultHeaderNames(), "s", "m", "r", config.Headers{{Name: "y", Value: "v"}})
	other := config.DefaultHeaderNames()
	other.Service = "x:service"
	c := CorrelationSuffix(other, "s", "m", "r", config.Headers{{Name: "x", Value: "v"}})
	if a != b || a == c {
		t.Errorf("override names must not count and header names must: %s %s %s", a, b, c)
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

func TestForwardMetadata(t *testing.T) {
	for k, want := range map[string]bool{
		"x-trace": true, "idempotency-key": true, ":authority": false, "grpc-timeout": false,
		"te": false, "content-type": false, "user-agent": false, "authorization": false,
	} {
		if got := forwardMetadata(k, false); got != want {
			t.Errorf("forwardMetadata(%q) = %v, want %v", k, got, want)
		}
	}
	if !forwardMetadata("authorization", true) {
		t.Error("authorization is not forwarded when the route allows it")
	}
}

// FuzzReplyHeaders feeds arbitrary reply headers through the decoding a
// reply record gets: it must never panic, whatever it accepts must be a
// valid metadata key, and every status must be a gRPC code.
func FuzzReplyHeaders(f *testing.F) {
	f.Add("x-trace", []byte("v"), "5", "msg")
	f.Add("raw-bin", []byte("AAEC/g=="), "0", "")
	f.Add("Bad Key", []byte{0xff}, "x", "\xff")
	f.Fuzz(func(t *testing.T, name string, value []byte, code, msg string) {
		if k, _, err := meta.FromHeader(name, value); err == nil {
			if meta.CheckKey(k) != nil {
				t.Fatalf("accepted invalid key %q", k)
			}
		}
		c, _ := parseStatus(code, true, msg)
		if c > codes.Unauthenticated {
			t.Fatalf("code %d out of range", c)
		}
	})
}
