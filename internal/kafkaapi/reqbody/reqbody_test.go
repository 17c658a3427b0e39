package reqbody

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func request(body []byte, encoding string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	if encoding != "" {
		r.Header.Set("Content-Encoding", encoding)
	}
	return r
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return out.Bytes()
}

func TestRead(t *testing.T) {
	const limit = 1000
	var tooLarge *TooLargeError
	var unsupported *UnsupportedEncodingError
	for _, tc := range []struct {
		name, encoding string
		body           []byte
		want           string // the body read, or "" when err is set
		err            any    // nil, &tooLarge, &unsupported, or "text" for another error
	}{
		{"plain", "", []byte("hello"), "hello", nil},
		{"identity", "identity", []byte("hello"), "hello", nil},
		{"gzip", "gzip", gz([]byte("hello")), "hello", nil},
		{"GZIP", "GZIP", gz([]byte("hello")), "hello", nil},
		{"at the limit", "gzip", gz(bytes.Repeat([]byte("x"), limit)), strings.Repeat("x", limit), nil},
		{"plain over", "", bytes.Repeat([]byte("x"), limit+1), "", &tooLarge},
		{"gzip over", "gzip", gz(bytes.Repeat([]byte("x"), 1<<20)), "", &tooLarge},
		{"br", "br", []byte("x"), "", &unsupported},
		{"two", "gzip, gzip", gz(gz([]byte("x"))), "", &unsupported},
		{"not gzip", "gzip", []byte("plain text"), "", "gzip"},
		{"truncated", "gzip", gz([]byte("hello"))[:10], "", "gzip"},
		// Empty gzip members decompress to nothing: the compressed size
		// is bounded too.
		{"empty members", "gzip", bytes.Repeat(gz(nil), 1000), "", &tooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(request(tc.body, tc.encoding), limit)
			switch want := tc.err.(type) {
			case nil:
				if err != nil || string(got) != tc.want {
					t.Fatalf("Read = %q, %v; want %q", got, err, tc.want)
				}
			case string:
				if err == nil || !strings.Contains(err.Error(), want) || errors.As(err, &tooLarge) {
					t.Fatalf("Read error %v, want one mentioning %q", err, want)
				}
			default:
				if !errors.As(err, want) {
					t.Fatalf("Read error %v (%T), want %T", err, err, want)
				}
			}
		})
	}
}

// FuzzRead feeds any body as gzip: Read never returns more than the limit
// and every error is one of its own.
func FuzzRead(f *testing.F) {
	f.Add(gz([]byte("hello")))
	f.Add(gz(bytes.Repeat([]byte("x"), 5000)))
	f.Add([]byte("not gzip"))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := Read(request(body, "gzip"), 1000)
		if len(got) > 1000 {
			t.Fatalf("read %d bytes over the limit", len(got))
		}
		if err != nil && got != nil {
			t.Fatalf("an error with a body: %v", err)
		}
	})
}
