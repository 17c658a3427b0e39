// Package fieldpath reads and writes fields of protobuf messages known only
// from their descriptors, by dotted paths such as order.customer_id, and
// fills text templates such as "{order.region}-{order.id}" from them. A
// source's keys, headers, timestamps and cursors use it.
package fieldpath

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// timestampName is the full name of google.protobuf.Timestamp, the one
// message type a field path may end in.
const timestampName = "google.protobuf.Timestamp"

// Path is a resolved path of singular fields through nested
// messages, such as order.customer_id.
type Path struct {
	text   string
	fields []protoreflect.FieldDescriptor
}

// Resolve resolves a dotted path in md; each name is a field's proto
// name or its JSON name. Every field must be singular (no list or map),
// every field but the last a message, and the last a scalar, an enum or a
// google.protobuf.Timestamp.
func Resolve(md protoreflect.MessageDescriptor, path string) (Path, error) {
	if path == "" {
		return Path{}, errors.New("is empty: name a field")
	}
	fp := Path{text: path}
	names := strings.Split(path, ".")
	for i, name := range names {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		if fd == nil {
			return Path{}, fmt.Errorf("%s has no field %q", md.FullName(), name)
		}
		if fd.IsList() || fd.IsMap() {
			return Path{}, fmt.Errorf("field %s is repeated: a path takes singular fields only", fd.FullName())
		}
		fp.fields = append(fp.fields, fd)
		last := i == len(names)-1
		isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
		switch {
		case !last && !isMsg:
			return Path{}, fmt.Errorf("field %s is not a message, so %q cannot go below it", fd.FullName(), names[i+1])
		case last && isMsg && fd.Message().FullName() != timestampName:
			return Path{}, fmt.Errorf("field %s is a message (%s): name one of its fields", fd.FullName(), fd.Message().FullName())
		case !last:
			md = fd.Message()
		}
	}
	return fp, nil
}

// Leaf is the last field of the path.
func (p Path) Leaf() protoreflect.FieldDescriptor { return p.fields[len(p.fields)-1] }

// Get returns the value at the path in m; a message left unset on the way
// yields the leaf's default, as proto3 reads it.
func (p Path) Get(m protoreflect.Message) protoreflect.Value {
	for _, fd := range p.fields[:len(p.fields)-1] {
		if !m.Has(fd) {
			return p.Leaf().Default()
		}
		m = m.Get(fd).Message()
	}
	return m.Get(p.Leaf())
}

// AppendText appends the text of the path's value in m: strings and bytes
// as they are, numbers in decimal, booleans as true or false, enums by
// name (by number when unknown) and timestamps in RFC 3339.
func (p Path) AppendText(b []byte, m protoreflect.Message) []byte {
	fd := p.Leaf()
	v := p.Get(m)
	switch fd.Kind() {
	case protoreflect.StringKind:
		return append(b, v.String()...)
	case protoreflect.BytesKind:
		return append(b, v.Bytes()...)
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(b, v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(b, v.Uint(), 10)
	case protoreflect.FloatKind:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, 32)
	case protoreflect.DoubleKind:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, 64)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return append(b, ev.Name()...)
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if !v.Message().IsValid() {
			return b
		}
		return append(b, timeOf(v.Message()).UTC().Format(time.RFC3339Nano)...)
	}
	return b
}

// timeOf reads a google.protobuf.Timestamp held in a dynamic message.
func timeOf(m protoreflect.Message) time.Time {
	fs := m.Descriptor().Fields()
	secs := m.Get(fs.ByName("seconds")).Int()
	nanos := m.Get(fs.ByName("nanos")).Int()
	return time.Unix(secs, nanos)
}

// Timestamp returns the record timestamp the path's value gives: a
// Timestamp, or an integer of milliseconds since the epoch. ok is false
// when the field is unset or zero, so the record keeps Ferry's time.
func (p Path) Timestamp(m protoreflect.Message) (t time.Time, ok bool) {
	v := p.Get(m)
	switch fd := p.Leaf(); fd.Kind() {
	case protoreflect.MessageKind:
		if !v.Message().IsValid() {
			return time.Time{}, false
		}
		t = timeOf(v.Message())
		return t, t.Unix() != 0 || t.Nanosecond() != 0
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return time.UnixMilli(int64(v.Uint())), v.Uint() != 0
	default:
		return time.UnixMilli(v.Int()), v.Int() != 0
	}
}

// Family groups the kinds a cursor can be carried between: a cursor
// read from a response field goes back into a request field of the same
// family.
func Family(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "integer"
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "text"
	case protoreflect.MessageKind:
		if fd.Message().FullName() == timestampName {
			return "timestamp"
		}
	}
	return ""
}

// SetText sets the path's field in m, creating the messages on the way,
// from text as AppendText writes it, adding inc to an integer.
func (p Path) SetText(m protoreflect.Message, text []byte, inc int64) error {
	for _, fd := range p.fields[:len(p.fields)-1] {
		m = m.Mutable(fd).Message()
	}
	fd := p.Leaf()
	var v protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		v = protoreflect.ValueOfString(string(text))
	case protoreflect.BytesKind:
		v = protoreflect.ValueOfBytes(append([]byte(nil), text...))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(string(text), 10, 32)
		if err != nil {
			return fmt.Errorf("cursor %q is not a 32-bit integer: %w", text, err)
		}
		v = protoreflect.ValueOfInt32(int32(n + inc))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(string(text), 10, 64)
		if err != nil {
			return fmt.Errorf("cursor %q is not an integer: %w", text, err)
		}
		v = protoreflect.ValueOfInt64(n + inc)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(string(text), 10, 32)
		if err != nil {
			return fmt.Errorf("cursor %q is not an unsigned 32-bit integer: %w", text, err)
		}
		v = protoreflect.ValueOfUint32(uint32(int64(n) + inc))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(string(text), 10, 64)
		if err != nil {
			return fmt.Errorf("cursor %q is not an unsigned integer: %w", text, err)
		}
		v = protoreflect.ValueOfUint64(n + uint64(inc))
	case protoreflect.MessageKind:
		t, err := time.Parse(time.RFC3339Nano, string(text))
		if err != nil {
			return fmt.Errorf("cursor %q is not a timestamp: %w", text, err)
		}
		ts := m.NewField(fd).Message()
		pb := timestamppb.New(t)
		fs := ts.Descriptor().Fields()
		ts.Set(fs.ByName("seconds"), protoreflect.ValueOfInt64(pb.GetSeconds()))
		ts.Set(fs.ByName("nanos"), protoreflect.ValueOfInt32(pb.GetNanos()))
		v = protoreflect.ValueOfMessage(ts)
	default:
		return fmt.Errorf("field %s cannot take a cursor", fd.FullName())
	}
	m.Set(fd, v)
	return nil
}

// Template is text with {field.path} placeholders, resolved against a
// message type; "{{" and "}}" stand for braces.
type Template struct {
	// parts alternate literal text and paths: a part with a path has no
	// text.
	parts []templatePart
}

type templatePart struct {
	text string
	path *Path
}

// ParseTemplate parses s against md.
func ParseTemplate(md protoreflect.MessageDescriptor, s string) (Template, error) {
	var t Template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '{' && i+1 < len(s) && s[i+1] == '{', c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte(c)
			i++
		case c == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return Template{}, fmt.Errorf("%q: a { has no closing }", s)
			}
			fp, err := Resolve(md, strings.TrimSpace(s[i+1:i+end]))
			if err != nil {
				return Template{}, fmt.Errorf("%q: %w", s, err)
			}
			if lit.Len() > 0 {
				t.parts = append(t.parts, templatePart{text: lit.String()})
				lit.Reset()
			}
			t.parts = append(t.parts, templatePart{path: &fp})
			i += end
		case c == '}':
			return Template{}, fmt.Errorf("%q: a } has no opening { (write }} for a brace)", s)
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, templatePart{text: lit.String()})
	}
	return t, nil
}

// AppendTo appends the template's text for m.
func (t Template) AppendTo(b []byte, m protoreflect.Message) []byte {
	for _, p := range t.parts {
		if p.path != nil {
			b = p.path.AppendText(b, m)
		} else {
			b = append(b, p.text...)
		}
	}
	return b
}

// Header is a record header whose value is a template.
type Header struct {
	Name  string
	Value Template
}

// AppendHeaders appends hs to out, their values filled from m.
func AppendHeaders(out []kgo.RecordHeader, hs []Header, m protoreflect.Message) []kgo.RecordHeader {
	for _, h := range hs {
		out = append(out, kgo.RecordHeader{Key: h.Name, Value: h.Value.AppendTo(nil, m)})
	}
	return out
}
