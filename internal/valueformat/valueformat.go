// Package valueformat converts Kafka record values between the protobuf
// bytes gRPC carries and the JSON (protojson) that Kafka clients without
// the .proto files — kcat, ksqlDB, Python, Flink — read and write. A
// produce route, a back end or a fetch route with format json converts at
// its edge: Kafka holds JSON, gRPC sees protobuf.
package valueformat

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
)

// Format is the value format of one route or back end. Its zero value, and
// a nil *Format, is protobuf: values pass as they are. It is read-only
// once built, so one Format serves every call at once.
type Format struct {
	json bool
	enc  protojson.MarshalOptions
}

// decode is how JSON is read, whatever the options that write it: fields
// a newer producer added are dropped, as protobuf parsers keep going past
// fields they do not know, and both field name styles are accepted.
var decode = protojson.UnmarshalOptions{DiscardUnknown: true}

// New returns the format named format (config.FormatProtobuf or
// config.FormatJSON) with the JSON options o, which apply to json only.
func New(format string, o config.JSONOptions) (*Format, error) {
	switch format {
	case "", config.FormatProtobuf:
		return &Format{}, nil
	case config.FormatJSON:
	default:
		return nil, fmt.Errorf("%q is not a value format: use protobuf or json", format)
	}
	f := &Format{json: true, enc: protojson.MarshalOptions{EmitUnpopulated: o.EmitDefaults}}
	switch o.FieldNames {
	case "", "json":
	case "proto":
		f.enc.UseProtoNames = true
	default:
		return nil, fmt.Errorf("%q is not a field naming: use json or proto", o.FieldNames)
	}
	return f, nil
}

// JSON reports whether values are JSON, so that they must be converted.
func (f *Format) JSON() bool { return f != nil && f.json }

// Encode writes m in the format: its protobuf encoding, or its JSON.
func (f *Format) Encode(m protoreflect.Message) ([]byte, error) {
	return f.AppendEncode(nil, m)
}

// AppendEncode is Encode appending to b, so that a caller can reuse a
// buffer.
func (f *Format) AppendEncode(b []byte, m protoreflect.Message) ([]byte, error) {
	if !f.JSON() {
		return proto.MarshalOptions{}.MarshalAppend(b, m.Interface())
	}
	out, err := f.enc.MarshalAppend(b, m.Interface())
	if err != nil {
		return nil, fmt.Errorf("%s cannot be written as JSON: %w", m.Descriptor().FullName(), err)
	}
	return out, nil
}

// ToJSON converts pb, a protobuf-encoded desc, to the format's JSON. The
// error says what does not decode or encode.
func (f *Format) ToJSON(desc protoreflect.MessageDescriptor, pb []byte) ([]byte, error) {
	m := dynamicpb.NewMessage(desc)
	if err := proto.Unmarshal(pb, m); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", desc.FullName(), err)
	}
	return f.Encode(m)
}

// FromJSON converts js, the JSON of a desc, to its protobuf encoding. The
// error is protojson's, which names the field and the place in the text.
func (f *Format) FromJSON(desc protoreflect.MessageDescriptor, js []byte) ([]byte, error) {
	return f.AppendFromJSON(nil, desc, js)
}

// AppendFromJSON is FromJSON appending the protobuf encoding to b. It reads
// JSON whatever f's format.
func (f *Format) AppendFromJSON(b []byte, desc protoreflect.MessageDescriptor, js []byte) ([]byte, error) {
	m := dynamicpb.NewMessage(desc)
	if err := decode.Unmarshal(js, m); err != nil {
		return nil, err
	}
	// A message built by protojson has every required field it checked, so
	// the encoding skips the check.
	return proto.MarshalOptions{AllowPartial: true}.MarshalAppend(b, m)
}
