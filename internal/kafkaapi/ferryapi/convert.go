package ferryapi

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

// toRecord checks a ProduceRequest and turns it into the record to write.
func toRecord(req *kafkav1.ProduceRequest) (kafkaapi.Record, error) {
	if err := required("topic", req.GetTopic()); err != nil {
		return kafkaapi.Record{}, err
	}
	// A set key is non-nil even when empty (protobuf keeps its presence),
	// which the engine hashes; an unset one stays nil and is spread.
	rec := kafkaapi.Record{Key: req.Key, Partition: -1}
	// The three value fields are not a oneof (see kafka.proto), so the
	// "at most one" is checked here.
	set := 0
	if req.ValueBytes != nil {
		set++
		rec.Value = req.ValueBytes // non-nil even when empty: not a tombstone
	}
	if req.ValueText != nil {
		set++
		rec.Value = []byte(*req.ValueText)
	}
	if req.ValueJson != nil {
		set++
		b, err := compactJSON(req.ValueJson)
		if err != nil {
			return kafkaapi.Record{}, invalid("value_json", "%v", err)
		}
		rec.Value = b
	}
	if set > 1 {
		return kafkaapi.Record{}, invalid("value", "set at most one of value_bytes, value_text and value_json")
	}
	if len(req.GetHeaders()) > 0 {
		rec.Headers = make([]kgo.RecordHeader, len(req.Headers))
		for i, h := range req.Headers {
			rec.Headers[i] = kgo.RecordHeader{Key: h.GetKey(), Value: h.GetValue()}
		}
	}
	if req.Partition != nil {
		if *req.Partition < 0 {
			return kafkaapi.Record{}, invalid("partition", "%d is negative", *req.Partition)
		}
		rec.Partition = *req.Partition
	}
	if ts := req.GetTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return kafkaapi.Record{}, invalid("timestamp", "%v", err)
		}
		rec.Timestamp = ts.AsTime()
	}
	return rec, nil
}

// compactJSON writes v as JSON text without insignificant whitespace.
// protojson's own output is deliberately unstable in its spacing, hence
// the json.Compact.
func compactJSON(v *structpb.Value) ([]byte, error) {
	if v == nil {
		return []byte("null"), nil
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(b))
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// toMessage presents a delivered message as value_format asks.
func toMessage(m *kafkaapi.Message, vf kafkav1.ValueFormat) *kafkav1.Message {
	return new(messageBuf).fill(m, vf)
}

// messageBuf holds a Message and its parts so that a stream can reuse them
// from one message to the next: Send marshals before it returns. It saves
// a Consume stream four allocations per message.
type messageBuf struct {
	msg     kafkav1.Message
	ts      timestamppb.Timestamp
	text    string
	headers []kafkav1.Header
	ptrs    []*kafkav1.Header
}

// fill overwrites the buffer's Message with m, as value_format asks.
func (b *messageBuf) fill(m *kafkaapi.Message, vf kafkav1.ValueFormat) *kafkav1.Message {
	out := &b.msg
	out.Topic, out.Partition, out.Offset, out.Key = m.Topic, m.Partition, m.Offset, m.Key
	out.Deliveries = int32(m.Deliveries)
	out.Timestamp = nil
	if !m.Timestamp.IsZero() {
		b.ts.Seconds, b.ts.Nanos = m.Timestamp.Unix(), int32(m.Timestamp.Nanosecond())
		out.Timestamp = &b.ts
	}
	out.ValueBytes, out.ValueText, out.ValueJson = nil, nil, nil
	if m.Value != nil {
		b.setValue(m.Value, vf)
	}
	out.Headers = nil
	if n := len(m.Headers); n > 0 {
		if cap(b.headers) < n {
			b.headers, b.ptrs = make([]kafkav1.Header, n), make([]*kafkav1.Header, n)
		}
		b.headers, b.ptrs = b.headers[:n], b.ptrs[:n]
		for i, h := range m.Headers {
			b.headers[i].Key, b.headers[i].Value = h.Key, h.Value
			b.ptrs[i] = &b.headers[i]
		}
		out.Headers = b.ptrs
	}
	return out
}

// setValue presents a non-null value: as text or JSON when asked and it
// is that, else as bytes.
func (b *messageBuf) setValue(v []byte, vf kafkav1.ValueFormat) {
	switch vf {
	case kafkav1.ValueFormat_VALUE_FORMAT_TEXT:
		if utf8.Valid(v) {
			b.text = string(v)
			b.msg.ValueText = &b.text
			return
		}
	case kafkav1.ValueFormat_VALUE_FORMAT_JSON:
		// json.Valid is a cheap syntax check that spares protojson (and
		// its allocations) values that are plainly not JSON.
		if json.Valid(v) && numbersFitFloat64(v) {
			js := new(structpb.Value)
			if protojson.Unmarshal(v, js) == nil {
				b.msg.ValueJson = js
				return
			}
		}
	}
	b.msg.ValueBytes = v
}

// numbersFitFloat64 reports whether every number in the JSON text v comes
// out of a float64 unchanged. google.protobuf.Value holds numbers as doubles, so a
// value with, say, a 20-digit id would come out changed: such a value is
// presented as bytes instead, so that nothing is lost.
func numbersFitFloat64(v []byte) bool {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if err != nil {
			return err == io.EOF
		}
		n, ok := tok.(json.Number)
		if !ok {
			continue
		}
		// The number survives when the shortest decimal form of the
		// float64 nearest to it, which is what protojson writes, is the
		// same number.
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || !sameNumber(string(n), strconv.FormatFloat(f, 'e', -1, 64)) {
			return false
		}
	}
}

// sameNumber reports whether the decimal numbers a and b (JSON syntax, or
// Go's 'e' format) are exactly equal. It compares their digits and
// exponents as text, in time linear in their length: big.Rat builds 10^n
// for an exponent n, which costs a record value as short as 1e-999999
// some 20 ms of CPU.
func sameNumber(a, b string) bool {
	an, ad, ae, ok1 := decimal(a)
	bn, bd, be, ok2 := decimal(b)
	return ok1 && ok2 && an == bn && ad == bd && ae == be
}

// decimal splits a decimal number into its sign, its significant digits
// (no leading or trailing zeros) and the power of ten of the last of them:
// "-1.50e3" is (true, "15", 2). Zero is (false, "", 0). ok is false for
// text that is not a number, or an exponent beyond an int32.
func decimal(s string) (neg bool, digits string, exp int, ok bool) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	mant, e, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		n, err := strconv.ParseInt(e, 10, 32)
		if err != nil {
			return false, "", 0, false
		}
		exp = int(n)
	}
	whole, frac, _ := strings.Cut(mant, ".")
	if whole == "" || strings.Trim(whole+frac, "0123456789") != "" {
		return false, "", 0, false
	}
	digits, exp = strings.TrimLeft(whole+frac, "0"), exp-len(frac)
	if digits == "" {
		return false, "", 0, true
	}
	trimmed := strings.TrimRight(digits, "0")
	return neg, trimmed, exp + len(digits) - len(trimmed), true
}

// timestamp converts t, leaving the zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
