package ferryapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/api/httpbody"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/httpcode"
	"github.com/ferryproxy/ferry/internal/kafkaapi/reqbody"
	"github.com/ferryproxy/ferry/internal/web"
)

// NewRESTHandler serves the REST/JSON bindings of ferry.kafka.v1.Kafka
// (the google.api.http rules of kafka.proto) by calling the service on srv,
// where a Server must be registered. Paths outside /v1/ and the other
// services of srv are not served.
//
// Unary methods go through connectrpc.com/vanguard, which turns a REST
// request into a gRPC call with a proto body (the only codec Ferry's gRPC
// server takes, as it forces its own) and the answer into JSON; bytes are
// base64 as protojson writes them.
//
// Server-streaming methods answering google.api.HttpBody (Subscribe) are
// bridged here instead: vanguard v0.4.0's REST side buffers a whole
// response until the call ends (restClientProtocol.endMustBeInHeaders),
// which would hold an endless subscription back for good. The bridge calls
// srv the same way and writes each chunk to the client as it comes.
//
// Errors, from either path, are a JSON google.rpc.Status,
// {"code":3,"message":"topic: is required","details":[]}, with the HTTP
// status gRPC's code maps to (400 for INVALID_ARGUMENT and
// FAILED_PRECONDITION, 404 NOT_FOUND, 409 ABORTED and ALREADY_EXISTS, 429
// RESOURCE_EXHAUSTED, 499 CANCELLED, 501 UNIMPLEMENTED, 503 UNAVAILABLE,
// 504 DEADLINE_EXCEEDED, 500 otherwise). A stream that fails after it
// started ends with the status as a last NDJSON line {"error":{...}} or an
// SSE event named "error".
func NewRESTHandler(srv *grpc.Server, maxBody int64) (http.Handler, error) {
	name := kafkav1.Kafka_ServiceDesc.ServiceName
	if _, ok := srv.GetServiceInfo()[name]; !ok {
		return nil, fmt.Errorf("serving REST for %s: the service is not registered on the gRPC server", name)
	}
	svc := vanguard.NewService(name, srv,
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto),
		// The gRPC server may have no decompressors: vanguard decodes
		// compressed REST bodies itself.
		vanguard.WithNoTargetCompression(),
	)
	tc, err := vanguard.NewTranscoder([]*vanguard.Service{svc},
		// A body that does not decode, or names a field the request
		// does not have, is INVALID_ARGUMENT: a misspelt
		// {"valueTxt":"x"} would otherwise write a null value.
		vanguard.WithCodec(web.JSONCodec(true)),
		vanguard.WithUnknownHandler(http.HandlerFunc(notFound)))
	if err != nil {
		return nil, fmt.Errorf("building the REST transcoder for %s: %w", name, err)
	}
	mux := http.NewServeMux()
	methods := kafkav1.File_ferry_kafka_v1_kafka_proto.Services().ByName("Kafka").Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		if !md.IsStreamingServer() || md.IsStreamingClient() || md.Output().FullName() != "google.api.HttpBody" {
			continue
		}
		b, err := newStreamBridge(srv, md)
		if err != nil {
			return nil, err
		}
		mux.Handle(http.MethodGet+" "+b.pattern, b)
	}
	limited := limitBody(tc, maxBody)
	for i := range methods.Len() {
		md := methods.Get(i)
		if md.IsStreamingServer() || md.IsStreamingClient() {
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
			method, path := httpMethod(r)
			if method == "" || strings.ContainsAny(path, "=*:") {
				continue // served by vanguard without the query check
			}
			mux.Handle(method+" "+path, checkQuery(md.Input(), r.GetBody() == "*", limited))
		}
	}
	mux.Handle("/v1/", limited)
	mux.HandleFunc("/", notFound)
	return mux, nil
}

// httpMethod returns a binding's HTTP method and path template.
func httpMethod(r *annotations.HttpRule) (string, string) {
	switch {
	case r.GetGet() != "":
		return http.MethodGet, r.GetGet()
	case r.GetPost() != "":
		return http.MethodPost, r.GetPost()
	case r.GetPut() != "":
		return http.MethodPut, r.GetPut()
	case r.GetDelete() != "":
		return http.MethodDelete, r.GetDelete()
	case r.GetPatch() != "":
		return http.MethodPatch, r.GetPatch()
	}
	return "", ""
}

// checkQuery refuses a query parameter that names no field of the request
// (or any, when the body holds the whole request) with 400 naming it:
// vanguard answers those with 500, as if the server had failed.
func checkQuery(input protoreflect.MessageDescriptor, wholeBody bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name := range r.URL.Query() {
			if wholeBody {
				writeStatus(w, status.Newf(codes.InvalidArgument, "unknown query parameter %q: this method takes its fields in the JSON body", name))
				return
			}
			if !isFieldPath(input, name) {
				writeStatus(w, status.Newf(codes.InvalidArgument, "unknown query parameter %q: %s has no such field", name, input.FullName()))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// isFieldPath reports whether path, dot-separated field names (proto or
// JSON), leads through md's fields.
func isFieldPath(md protoreflect.MessageDescriptor, path string) bool {
	for part := range strings.SplitSeq(path, ".") {
		if md == nil {
			return false
		}
		fd := md.Fields().ByJSONName(part)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(part))
		}
		if fd == nil {
			return false
		}
		md = fd.Message()
	}
	return true
}

// limitBody answers a request body over max bytes with 413 and the error
// JSON of every other answer. It reads the body first, decoded as its
// Content-Encoding says (a unary call's body is read whole anyway), so the
// limit holds for what the body expands to: vanguard would decompress a
// gzip body without any bound. Given a reader that fails part-way, vanguard
// would also answer UNAVAILABLE rather than the client's error.
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			body, err := reqbody.Read(r, max)
			var tooLarge *reqbody.TooLargeError
			var unsupported *reqbody.UnsupportedEncodingError
			switch {
			case errors.As(err, &tooLarge):
				writeStatusCode(w, http.StatusRequestEntityTooLarge,
					status.Newf(codes.ResourceExhausted, "the request body is over %d bytes, counted decompressed (listeners.http.max_request_body_size)", max))
				return
			case errors.As(err, &unsupported):
				writeStatusCode(w, http.StatusUnsupportedMediaType, status.New(codes.InvalidArgument, unsupported.Error()))
				return
			case err != nil:
				writeStatus(w, status.New(codes.InvalidArgument, err.Error()))
				return
			}
			reqbody.Replace(r, body)
		}
		next.ServeHTTP(w, r)
	})
}

// notFound answers a path no binding has, in the shape of every other
// error.
func notFound(w http.ResponseWriter, r *http.Request) {
	writeStatus(w, status.Newf(codes.NotFound, "no Kafka API method at %s %s", r.Method, r.URL.Path))
}

// writeStatus writes st as the whole JSON response. Its shape and the
// HTTP status are vanguard's, so both paths of the handler answer alike.
func writeStatus(w http.ResponseWriter, st *status.Status) {
	writeStatusCode(w, httpcode.FromCode(st.Code()), st)
}

// writeStatusCode writes st as the JSON response with HTTP status code.
func writeStatusCode(w http.ResponseWriter, code int, st *status.Status) {
	body, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"encoding the error failed","details":[]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// streamBridge serves a GET binding of a server-streaming method that
// answers google.api.HttpBody: path variables and query parameters make the
// request, each answered chunk goes to the client as it comes.
type streamBridge struct {
	srv     *grpc.Server
	method  string // the gRPC path, /pkg.Service/Method
	input   protoreflect.MessageType
	pattern string   // the binding's path as a net/http pattern
	vars    []string // the binding's path variables, field names
}

func newStreamBridge(srv *grpc.Server, md protoreflect.MethodDescriptor) (*streamBridge, error) {
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule.GetGet() == "" || len(rule.GetAdditionalBindings()) > 0 || rule.GetBody() != "" {
		return nil, fmt.Errorf("serving %s over REST: only a single GET binding can stream", md.FullName())
	}
	input, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil, fmt.Errorf("serving %s over REST: %w", md.FullName(), err)
	}
	b := &streamBridge{
		srv:     srv,
		method:  "/" + string(md.Parent().FullName()) + "/" + string(md.Name()),
		input:   input,
		pattern: rule.GetGet(),
	}
	// The template's simple variables, {field}, are net/http wildcards as
	// they stand; anything richer ({a=b/*}, a.b, **) is not supported.
	for _, seg := range strings.Split(strings.TrimPrefix(b.pattern, "/"), "/") {
		if !strings.HasPrefix(seg, "{") {
			continue
		}
		v := strings.TrimSuffix(strings.TrimPrefix(seg, "{"), "}")
		fd := input.Descriptor().Fields().ByName(protoreflect.Name(v))
		if strings.ContainsAny(v, "=*.{}") || fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
			return nil, fmt.Errorf("serving %s over REST: path variable %q is not a string field", md.FullName(), seg)
		}
		b.vars = append(b.vars, v)
	}
	return b, nil
}

func (b *streamBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	msg := b.input.New()
	for _, v := range b.vars {
		msg.Set(msg.Descriptor().Fields().ByName(protoreflect.Name(v)), protoreflect.ValueOfString(r.PathValue(v)))
	}
	if err := setQuery(msg, r.URL.Query(), b.vars); err != nil {
		writeStatus(w, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	payload, err := proto.Marshal(msg.Interface())
	if err != nil {
		writeStatus(w, status.Newf(codes.Internal, "encoding the request: %v", err))
		return
	}
	frame := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(payload)))
	copy(frame[5:], payload)

	// The call: what grpc.Server.ServeHTTP takes, an HTTP/2 POST of one
	// length-prefixed message. The client's headers go along as metadata.
	call := r.Clone(r.Context())
	call.Method = http.MethodPost
	call.URL = &url.URL{Path: b.method}
	call.RequestURI = ""
	call.Proto, call.ProtoMajor, call.ProtoMinor = "HTTP/2.0", 2, 0
	call.Body = io.NopCloser(bytes.NewReader(frame))
	call.ContentLength = int64(len(frame))
	for _, h := range []string{"Content-Length", "Content-Encoding", "Accept", "Accept-Encoding", "Connection", "Te", "Grpc-Timeout", "Grpc-Encoding", "Grpc-Accept-Encoding"} {
		call.Header.Del(h)
	}
	call.Header.Set("Content-Type", "application/grpc+proto")

	bw := &bridgeWriter{w: w, rc: http.NewResponseController(w), header: http.Header{}}
	b.srv.ServeHTTP(bw, call)
	bw.end(r)
}

// setQuery sets the request's scalar fields from the query, as vanguard
// reads them: a field's proto or JSON name, enums by name or number.
func setQuery(msg protoreflect.Message, q url.Values, pathVars []string) error {
	fields := msg.Descriptor().Fields()
	for name, vals := range q {
		fd := fields.ByJSONName(name)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(name))
		}
		if fd == nil {
			return fmt.Errorf("unknown query parameter %q", name)
		}
		for _, v := range pathVars {
			if string(fd.Name()) == v {
				return fmt.Errorf("query parameter %q: %s is set by the path", name, v)
			}
		}
		if fd.IsList() || fd.IsMap() || len(vals) != 1 {
			return fmt.Errorf("query parameter %q: give one value", name)
		}
		val, err := parseScalar(fd, vals[0])
		if err != nil {
			return fmt.Errorf("query parameter %q: %w", name, err)
		}
		msg.Set(fd, val)
	}
	return nil
}

func parseScalar(fd protoreflect.FieldDescriptor, s string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		return protoreflect.ValueOfBool(b), err
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)), err
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(n), err
	case protoreflect.EnumKind:
		if n, err := strconv.ParseInt(s, 10, 32); err == nil {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), nil
		}
		if ev := fd.Enum().Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		return protoreflect.Value{}, fmt.Errorf("%q is not a value of %s", s, fd.Enum().FullName())
	default:
		return protoreflect.Value{}, fmt.Errorf("%s fields cannot be set in the query", fd.Kind())
	}
}

// bridgeWriter takes the gRPC response grpc.Server.ServeHTTP writes (frames,
// then the status in trailers of its header map) and writes each HttpBody
// chunk to w. grpc-go calls it from the ServeHTTP goroutine only.
type bridgeWriter struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	header http.Header // the gRPC side's headers and trailers

	code        int          // the gRPC side's HTTP status, 0 until written
	buf         []byte       // a frame not yet complete
	started     bool         // w's headers were written
	contentType string       // of the stream, from its first chunk
	failure     bytes.Buffer // a non-gRPC error response (a rejected call)
	dirty       bool         // written since the last flush
}

func (bw *bridgeWriter) Header() http.Header { return bw.header }

func (bw *bridgeWriter) WriteHeader(code int) {
	if bw.code == 0 {
		bw.code = code
	}
}

func (bw *bridgeWriter) Write(p []byte) (int, error) {
	if bw.code == 0 {
		bw.code = http.StatusOK
	}
	if bw.code != http.StatusOK {
		return bw.failure.Write(p)
	}
	bw.buf = append(bw.buf, p...)
	for len(bw.buf) >= 5 {
		n := int(binary.BigEndian.Uint32(bw.buf[1:5]))
		if len(bw.buf) < 5+n {
			break
		}
		if bw.buf[0] != 0 {
			return 0, fmt.Errorf("bridging a stream: compressed frame not expected")
		}
		var chunk httpbody.HttpBody
		if err := proto.Unmarshal(bw.buf[5:5+n], &chunk); err != nil {
			return 0, fmt.Errorf("bridging a stream: decoding a chunk: %w", err)
		}
		bw.buf = bw.buf[:copy(bw.buf, bw.buf[5+n:])]
		if err := bw.chunk(&chunk); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// chunk writes one answered HttpBody; the first sets the content type.
func (bw *bridgeWriter) chunk(c *httpbody.HttpBody) error {
	if !bw.started {
		bw.contentType = c.GetContentType()
		if bw.contentType == "" {
			bw.contentType = "application/octet-stream"
		}
		h := bw.w.Header()
		h.Set("Content-Type", bw.contentType)
		h.Set("Cache-Control", "no-cache")
		// Reverse proxies such as nginx would otherwise buffer the stream.
		h.Set("X-Accel-Buffering", "no")
		bw.w.WriteHeader(http.StatusOK)
		bw.started, bw.dirty = true, true
	}
	if len(c.GetData()) == 0 {
		return nil
	}
	bw.dirty = true
	_, err := bw.w.Write(c.GetData())
	return err
}

// Flush passes grpc-go's flush on, once per message boundary.
func (bw *bridgeWriter) Flush() {
	if bw.dirty {
		bw.dirty = false
		_ = bw.rc.Flush()
	}
}

// end writes how the call ended, once ServeHTTP returned.
func (bw *bridgeWriter) end(r *http.Request) {
	st := bw.status()
	if !bw.started {
		if st.Code() == codes.OK {
			bw.w.WriteHeader(http.StatusOK)
			return
		}
		writeStatus(bw.w, st)
		return
	}
	if st.Code() == codes.OK || r.Context().Err() != nil {
		return // done, or nobody is listening
	}
	js, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st.Proto())
	if err != nil {
		return
	}
	if bw.contentType == contentTypeSSE {
		_, _ = fmt.Fprintf(bw.w, "event: error\ndata: %s\n\n", js)
	} else {
		_, _ = fmt.Fprintf(bw.w, "{\"error\":%s}\n", js)
	}
	_ = bw.rc.Flush()
}

// status reads the call's status from the gRPC trailers.
func (bw *bridgeWriter) status() *status.Status {
	if bw.code != 0 && bw.code != http.StatusOK {
		return status.Newf(codes.Internal, "calling the gRPC service failed: HTTP %d: %s", bw.code, strings.TrimSpace(bw.failure.String()))
	}
	raw := bw.header.Get("Grpc-Status")
	if raw == "" {
		return status.New(codes.Internal, "the gRPC service answered without a status")
	}
	code, err := strconv.Atoi(raw)
	if err != nil {
		return status.Newf(codes.Internal, "the gRPC service answered with status %q", raw)
	}
	if bin := bw.header.Get("Grpc-Status-Details-Bin"); bin != "" {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(bin, "=")); err == nil {
			var p spb.Status
			if proto.Unmarshal(b, &p) == nil && p.GetCode() == int32(code) {
				return status.FromProto(&p)
			}
		}
	}
	msg := bw.header.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return status.New(codes.Code(code), msg)
}

var _ http.Flusher = (*bridgeWriter)(nil)
