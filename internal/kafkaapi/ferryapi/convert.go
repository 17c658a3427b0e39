package ferryapi

import (
	"bytes"
	"encoding/json"
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
	switch v := req.GetValue().(type) {
	case *kafkav1.ProduceRequest_ValueBytes:
		rec.Value = v.ValueBytes
		if rec.Value == nil {
			rec.Value = []byte{} // set, so not a tombstone
		}
	case *kafkav1.ProduceRequest_ValueText:
		rec.Value = []byte(v.ValueText)
	case *kafkav1.ProduceRequest_ValueJson:
		b, err := compactJSON(v.ValueJson)
		if err != nil {
			return kafkaapi.Record{}, invalid("value_json", "%v", err)
		}
		rec.Value = b
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
	out := &kafkav1.Message{
		Topic:      m.Topic,
		Partition:  m.Partition,
		Offset:     m.Offset,
		Key:        m.Key,
		Timestamp:  timestamp(m.Timestamp),
		Deliveries: int32(m.Deliveries),
	}
	if m.Value != nil {
		setValue(out, m.Value, vf)
	}
	if len(m.Headers) > 0 {
		out.Headers = make([]*kafkav1.Header, len(m.Headers))
		for i, h := range m.Headers {
			out.Headers[i] = &kafkav1.Header{Key: h.Key, Value: h.Value}
		}
	}
	return out
}

// setValue presents a non-null value: as text or JSON when asked and it
// is that, else as bytes.
func setValue(out *kafkav1.Message, b []byte, vf kafkav1.ValueFormat) {
	switch vf {
	case kafkav1.ValueFormat_VALUE_FORMAT_TEXT:
		if utf8.Valid(b) {
			out.Value = &kafkav1.Message_ValueText{ValueText: string(b)}
			return
		}
	case kafkav1.ValueFormat_VALUE_FORMAT_JSON:
		// json.Valid is a cheap syntax check that spares protojson (and
		// its allocations) values that are plainly not JSON.
		if json.Valid(b) {
			v := new(structpb.Value)
			if protojson.Unmarshal(b, v) == nil {
				out.Value = &kafkav1.Message_ValueJson{ValueJson: v}
				return
			}
		}
	}
	out.Value = &kafkav1.Message_ValueBytes{ValueBytes: b}
}

// timestamp converts t, leaving the zero time unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
