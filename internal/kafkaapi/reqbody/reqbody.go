// Package reqbody reads the request bodies of the Kafka API's REST faces
// (Ferry's and Kafka-Pixy's) under one size limit that holds for the
// decoded body, whatever its Content-Encoding: a few hundred kilobytes of
// gzip can expand to gigabytes.
package reqbody

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// TooLargeError is a body over the limit, counted after decoding.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the request body is over %d bytes (decompressed)", e.Limit)
}

// UnsupportedEncodingError is a Content-Encoding other than gzip or
// identity.
type UnsupportedEncodingError struct{ Encoding string }

func (e *UnsupportedEncodingError) Error() string {
	return fmt.Sprintf("Content-Encoding %q is not supported: send the body as it is, or gzip it", e.Encoding)
}

// Encoded reports whether r's body has a Content-Encoding to decode.
func Encoded(r *http.Request) bool {
	ce := strings.TrimSpace(r.Header.Get("Content-Encoding"))
	return ce != "" && !strings.EqualFold(ce, "identity")
}

// Read reads r's whole body, decoded as its Content-Encoding says (none,
// identity or gzip), and fails with *TooLargeError once it has more than
// max bytes after decoding; it never holds more than max+1 of them. A body
// that is not valid gzip is an error of its own.
func Read(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	var src io.Reader = r.Body
	what := "reading the request body"
	if Encoded(r) {
		ces := r.Header.Values("Content-Encoding")
		ce := strings.TrimSpace(ces[0])
		if len(ces) != 1 || !strings.EqualFold(ce, "gzip") {
			return nil, &UnsupportedEncodingError{Encoding: strings.Join(ces, ", ")}
		}
		// The compressed body is bounded too, generously above max
		// (gzip adds a little to data it cannot compress): a stream of
		// empty gzip members would otherwise be read without end while
		// it decompresses to nothing.
		what = "decompressing the gzip request body"
		zr, err := gzip.NewReader(&capped{r: r.Body, left: max + max/8 + 4096, limit: max})
		if err != nil {
			return nil, decodeErr(what, err)
		}
		defer zr.Close()
		src = zr
	}
	body, err := io.ReadAll(io.LimitReader(src, max+1))
	if int64(len(body)) > max {
		return nil, &TooLargeError{Limit: max}
	}
	if err != nil {
		return nil, decodeErr(what, err)
	}
	return body, nil
}

// decodeErr passes a *TooLargeError on and says what failed otherwise.
func decodeErr(what string, err error) error {
	var tooLarge *TooLargeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return tooLarge
	case errors.As(err, &mbe):
		return &TooLargeError{Limit: mbe.Limit}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// capped reads at most left bytes from r, then fails with a
// *TooLargeError naming limit.
type capped struct {
	r     io.Reader
	left  int64
	limit int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, &TooLargeError{Limit: c.limit}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// Replace sets r's body to the decoded body, so the handlers after Read
// see a plain one.
func Replace(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Del("Content-Encoding")
	r.Header.Del("Content-Length")
}
