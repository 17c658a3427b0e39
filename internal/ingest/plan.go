package ingest

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fieldpath"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/valueformat"
)

// The headers Ferry writes on every record of a source, beside those the
// source configures.
const (
	// HeaderSource holds the source's name.
	HeaderSource = "ferry-source"
	// HeaderMethod holds the method the record came from, as
	// package.Service/Method.
	HeaderMethod = "ferry-method"
	// HeaderCursor holds the record's own cursor (sources with a cursor).
	HeaderCursor = "ferry-cursor"
	// HeaderSeq orders a source's records as Ferry read them, across
	// restarts and instances: "<generation>-<n>", the generation of the
	// ingest group in which the writing instance got the source, and a
	// count that goes on from the latest record found (sources with a
	// cursor).
	HeaderSeq = "ferry-seq"
	// HeaderResume holds the cursor up to which every record of the source
	// was acknowledged by Kafka when this one was written: where a new
	// owner of the source resumes when this is the latest record it finds
	// (sources with a cursor). Empty: none yet, the configured request.
	HeaderResume = "ferry-resume"
	// metaPrefix starts the names of headers taken from the stream's
	// response metadata.
	metaPrefix = "meta:"
)

// Plan is a source compiled against the loaded protos: the call to open
// and how each response becomes a record. It is read-only once built.
type Plan struct {
	cfg config.Source
	// path is the gRPC method path, /package.Service/Method.
	path string
	// stream is true for a server-streaming method, false for a unary one
	// (polled).
	stream  bool
	in, out protoreflect.MessageDescriptor
	// request is the configured request; requestBytes its encoding.
	request      *dynamicpb.Message
	requestBytes []byte
	key          *fieldpath.Template
	headers      []fieldpath.Header
	stamp        *fieldpath.Path
	// cursor is the response field that tells where the stream is, and
	// reqCursor the request field it goes back into; nil without one.
	cursor, reqCursor *fieldpath.Path
	json              *valueformat.Format
	// decode is set when a response must be decoded to make its record.
	decode bool
	// name and method are the values of the ferry-source and ferry-method
	// headers, shared by every record.
	name, method []byte
}

// Compile checks source i of cfg against reg and builds its plan. Errors
// are located in the configuration file.
func Compile(cfg *config.Config, i int, reg *protoreg.Registry) (*Plan, error) {
	s := cfg.Sources[i]
	p := fmt.Sprintf("sources[%d]", i)
	errf := func(key, format string, args ...any) error {
		return config.Errors{cfg.Errorf(p+key, format, args...)}
	}
	m, ok := reg.Method("/" + s.Method)
	if !ok {
		return nil, errf(".method", "no loaded proto defines a method %q: check the name and the protos section", s.Method)
	}
	if m.ClientStreaming {
		return nil, errf(".method", "%s is client-streaming: a source calls a server-streaming method, or polls a unary one", s.Method)
	}
	plan := &Plan{cfg: s, path: m.Path, stream: m.ServerStreaming, in: m.Desc.Input(), out: m.Desc.Output(),
		name: []byte(s.Name), method: []byte(s.Method)}
	plan.request = dynamicpb.NewMessage(plan.in)
	if err := protojson.Unmarshal([]byte(s.Request), plan.request); err != nil {
		return nil, errf(".request", "is not a %s in JSON: %v", plan.in.FullName(), err)
	}
	var err error
	if plan.requestBytes, err = proto.Marshal(plan.request); err != nil {
		return nil, errf(".request", "cannot be encoded: %v", err)
	}
	if s.Key != "" {
		t, err := fieldpath.ParseTemplate(plan.out, s.Key)
		if err != nil {
			return nil, errf(".key", "%v", err)
		}
		plan.key = &t
	}
	for _, h := range s.Headers {
		t, err := fieldpath.ParseTemplate(plan.out, h.Value)
		if err != nil {
			return nil, errf(".headers."+h.Name, "%v", err)
		}
		plan.headers = append(plan.headers, fieldpath.Header{Name: h.Name, Value: t})
	}
	if s.TimestampField != "" {
		fp, err := fieldpath.Resolve(plan.out, s.TimestampField)
		if err != nil {
			return nil, errf(".timestamp_field", "%v", err)
		}
		switch fd := fp.Leaf(); {
		case fd.Kind() == protoreflect.MessageKind, fieldpath.Family(fd) == "integer":
		default:
			return nil, errf(".timestamp_field", "field %s is a %s: name a google.protobuf.Timestamp or an integer of milliseconds", fd.FullName(), fd.Kind())
		}
		plan.stamp = &fp
	}
	if c := s.Cursor; c.Enabled() {
		fp, err := fieldpath.Resolve(plan.out, c.Field)
		if err != nil {
			return nil, errf(".cursor.field", "%v", err)
		}
		from := fieldpath.Family(fp.Leaf())
		if from == "" {
			return nil, errf(".cursor.field", "field %s is a %s: a cursor is an integer, a string, bytes or a google.protobuf.Timestamp", fp.Leaf().FullName(), fp.Leaf().Kind())
		}
		rp, err := fieldpath.Resolve(plan.in, c.RequestField)
		if err != nil {
			return nil, errf(".cursor.request_field", "%v", err)
		}
		switch to := fieldpath.Family(rp.Leaf()); {
		case from != to:
			return nil, errf(".cursor.request_field", "field %s cannot take the cursor: it is not of the kind of %s (%s)", rp.Leaf().FullName(), fp.Leaf().FullName(), from)
		case c.Increment != 0 && from != "integer":
			return nil, errf(".cursor.increment", "applies to integer cursors only, and %s is a %s", fp.Leaf().FullName(), fp.Leaf().Kind())
		}
		plan.cursor, plan.reqCursor = &fp, &rp
	}
	if s.Value.Format == config.FormatJSON {
		names := "json"
		if s.Value.UseProtoNames {
			names = "proto"
		}
		f, err := valueformat.New(config.FormatJSON, config.JSONOptions{FieldNames: names, EmitDefaults: s.Value.EmitDefaults})
		if err != nil {
			return nil, errf(".value", "%v", err)
		}
		plan.json = f
	}
	plan.decode = plan.json != nil || plan.key != nil || len(plan.headers) > 0 || plan.stamp != nil || plan.cursor != nil
	return plan, nil
}

// Check compiles every source of cfg, as `ferry validate` and reload do,
// and returns their errors joined.
func Check(cfg *config.Config, reg *protoreg.Registry) error {
	var errs config.Errors
	for i := range cfg.Sources {
		if _, err := Compile(cfg, i, reg); err != nil {
			errs = append(errs, err.(config.Errors)...)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// requestFor returns the request that opens the call: the configured one,
// with cursor (when not empty) in the cursor's request field.
func (p *Plan) requestFor(cursor []byte) ([]byte, error) {
	if p.reqCursor == nil || len(cursor) == 0 {
		return p.requestBytes, nil
	}
	req := dynamicpb.NewMessage(p.in)
	proto.Merge(req, p.request)
	if err := p.reqCursor.SetText(req, cursor, p.cfg.Cursor.Increment); err != nil {
		return nil, err
	}
	return proto.Marshal(req)
}

// outRecord is a record with room for its headers.
type outRecord struct {
	kgo.Record
	headers [6]kgo.RecordHeader
}

// record makes the record of one response, raw as the server sent it,
// decoding it into msg (reused from call to call) when the plan needs its
// fields. It returns the response's cursor too, nil without one.
func (p *Plan) record(raw []byte, msg *dynamicpb.Message, meta []kgo.RecordHeader) (*kgo.Record, []byte, error) {
	// The record and its headers in one allocation, when they fit.
	o := &outRecord{Record: kgo.Record{Topic: p.cfg.Topic, Value: raw}}
	r := &o.Record
	if n := 5 + len(p.headers) + len(meta); n <= len(o.headers) {
		r.Headers = o.headers[:0]
	} else {
		r.Headers = make([]kgo.RecordHeader, 0, n)
	}
	r.Headers = append(r.Headers,
		kgo.RecordHeader{Key: HeaderSource, Value: p.name},
		kgo.RecordHeader{Key: HeaderMethod, Value: p.method})
	var cursor []byte
	if p.decode {
		msg.Reset()
		if err := proto.Unmarshal(raw, msg); err != nil {
			return nil, nil, fmt.Errorf("the response is not a %s: %w", p.out.FullName(), err)
		}
		if p.json != nil {
			b, err := p.json.Encode(msg)
			if err != nil {
				return nil, nil, err // names the type and the field
			}
			r.Value = b
		}
		if p.key != nil {
			r.Key = p.key.AppendTo(nil, msg)
		}
		r.Headers = fieldpath.AppendHeaders(r.Headers, p.headers, msg)
		if p.stamp != nil {
			if t, ok := p.stamp.Timestamp(msg); ok {
				r.Timestamp = t
			}
		}
		if p.cursor != nil {
			cursor = p.cursor.AppendText(nil, msg)
		}
	}
	r.Headers = append(r.Headers, meta...)
	if r.Timestamp.IsZero() {
		r.Timestamp = time.Now()
	}
	return r, cursor, nil
}
