package web

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
)

// gRPC-Web's text format is its binary format in base64, for clients that
// cannot read binary bodies. vanguard v0.4.0 speaks only the binary one, so
// Handler turns a text call into a binary one: the request body is decoded
// as it is read, and the response encoded as it is written.

const (
	textType      = "application/grpc-web-text"
	binaryType    = "application/grpc-web"
	textTypeProto = "application/grpc-web-text+proto"
)

// isText reports whether ct is gRPC-Web's text format.
func isText(ct string) bool {
	return ct == textType || strings.HasPrefix(ct, textType+"+") || strings.HasPrefix(ct, textType+";")
}

// fromText rewrites a text call r as a binary one, and returns the writer
// that encodes its response; call finish once the call is served.
func fromText(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	r = r.Clone(r.Context())
	r.Header.Set("Content-Type", binaryType+strings.TrimPrefix(r.Header.Get("Content-Type"), textType))
	r.Header.Del("Content-Length")
	r.ContentLength = -1
	r.Body = &textBody{r: r.Body}
	tw := &textWriter{w: w}
	return tw, r, tw.finish
}

// textBody decodes a base64 body. Clients may send it in pieces, each
// padded, so every 4-character quantum is decoded on its own; whitespace
// (a line break from a shell's base64) is skipped.
type textBody struct {
	r      io.ReadCloser
	raw    [512]byte
	in     [4]byte
	have   int
	outBuf [384]byte // raw decoded: at most 3/4 of it
	out    []byte    // decoded, not yet read
	err    error
}

func (b *textBody) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		n, err := b.r.Read(b.raw[:])
		b.out = b.outBuf[:0]
		var dec [3]byte
		for _, c := range b.raw[:n] {
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				continue
			}
			b.in[b.have] = c
			b.have++
			if b.have < 4 {
				continue
			}
			m, derr := base64.StdEncoding.Decode(dec[:], b.in[:])
			if derr != nil {
				b.err = errors.New("the gRPC-Web text body is not base64")
				return 0, b.err
			}
			b.out = append(b.out, dec[:m]...)
			b.have = 0
		}
		if err == io.EOF && b.have != 0 {
			err = errors.New("the gRPC-Web text body ends inside a base64 quantum")
		}
		if err != nil {
			b.err = err
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

func (b *textBody) Close() error { return b.r.Close() }

// textWriter encodes a response body in base64. Bytes that do not fill a
// quantum wait for the next write; Flush writes them padded, as gRPC-Web
// clients accept, so that each flushed message reaches the client at once.
type textWriter struct {
	w       http.ResponseWriter
	pending []byte
	headed  bool
}

func (t *textWriter) Header() http.Header { return t.w.Header() }

func (t *textWriter) WriteHeader(code int) {
	if !t.headed {
		t.headed = true
		h := t.w.Header()
		if ct := h.Get("Content-Type"); strings.HasPrefix(ct, binaryType) {
			h.Set("Content-Type", textType+strings.TrimPrefix(ct, binaryType))
		}
		h.Del("Content-Length")
	}
	t.w.WriteHeader(code)
}

func (t *textWriter) Write(p []byte) (int, error) {
	if !t.headed {
		t.WriteHeader(http.StatusOK)
	}
	n := len(p)
	t.pending = append(t.pending, p...)
	whole := len(t.pending) / 3 * 3
	if whole > 0 {
		out := make([]byte, base64.StdEncoding.EncodedLen(whole))
		base64.StdEncoding.Encode(out, t.pending[:whole])
		if _, err := t.w.Write(out); err != nil {
			return 0, err
		}
		t.pending = append(t.pending[:0], t.pending[whole:]...)
	}
	return n, nil
}

// Flush writes what waits, padded, and flushes.
func (t *textWriter) Flush() {
	t.flushPending()
	if f, ok := t.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (t *textWriter) flushPending() {
	if len(t.pending) == 0 {
		return
	}
	_, _ = t.w.Write([]byte(base64.StdEncoding.EncodeToString(t.pending)))
	t.pending = t.pending[:0]
}

// finish writes the last bytes once the call is served.
func (t *textWriter) finish() { t.flushPending() }

// Unwrap lets http.ResponseController reach the connection's writer.
func (t *textWriter) Unwrap() http.ResponseWriter { return t.w }
