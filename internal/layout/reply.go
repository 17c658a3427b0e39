package layout

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// ResponseMetadata is the metadata a back end's server answered a call
// with, as meta: headers (see Layout.MetadataHeaders).
type ResponseMetadata struct {
	// Header is the response header metadata, written on every reply
	// record.
	Header []kgo.RecordHeader
	// Trailer is the trailer metadata, written on the final reply record.
	Trailer []kgo.RecordHeader
	// HeaderWritten reports that a reply record of the call carried
	// Header already, so the final record need not (see finalMetadata).
	HeaderWritten bool
}

// finalMetadata is the metadata of the final reply record: the trailers,
// after the response header metadata when no reply record carried it (a
// call answered with no response message, such as an error with response
// headers), since a front end takes the response headers from the first
// record of a call. Zilla writes neither: with no trailers, the final record
// of a call that wrote a response message is the same as Zilla's.
func finalMetadata(m ResponseMetadata) []kgo.RecordHeader {
	if len(m.Header) == 0 || m.HeaderWritten {
		return m.Trailer
	}
	return append(m.Header[:len(m.Header):len(m.Header)], m.Trailer...)
}

// MetadataHeaders returns md as meta: headers, for ResponseMetadata.
func (l Layout) MetadataHeaders(md metadata.MD) []kgo.RecordHeader {
	return appendMetadata(nil, md, l.names.MetaPrefix, nil)
}

// ReplyRecord is the reply record of one response message: key and
// correlation id header id, then the response header metadata.
func (l Layout) ReplyRecord(topic, id string, m ResponseMetadata, value []byte) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(m.Header)+1)
	hs = append(hs, kgo.RecordHeader{Key: l.names.CorrelationID, Value: []byte(id)})
	hs = append(hs, m.Header...)
	return &kgo.Record{Topic: topic, Key: []byte(id), Value: value, Headers: hs}
}

// FinalRecord is the final reply record of a call: a null value, key and
// correlation id header id, the metadata (see finalMetadata), the status
// code as decimal text and, when the code is not OK, the status message
// if there is one.
func (l Layout) FinalRecord(topic, id string, m ResponseMetadata, code codes.Code, msg string) *kgo.Record {
	meta := finalMetadata(m)
	hs := make([]kgo.RecordHeader, 0, len(meta)+3)
	hs = append(hs, kgo.RecordHeader{Key: l.names.CorrelationID, Value: []byte(id)})
	hs = append(hs, meta...)
	hs = append(hs, kgo.RecordHeader{Key: l.names.Status, Value: []byte(strconv.FormatUint(uint64(code), 10))})
	if code != codes.OK && msg != "" {
		hs = append(hs, kgo.RecordHeader{Key: l.names.Message, Value: []byte(msg)})
	}
	return &kgo.Record{Topic: topic, Key: []byte(id), Headers: hs}
}

// NoMethodRecord is the final reply to a request record with correlation
// id id that names no service or method: StatusNoMethod, as Zilla answers.
func (l Layout) NoMethodRecord(topic, id string) *kgo.Record {
	return l.FinalRecord(topic, id, ResponseMetadata{}, StatusNoMethod, noMethodMessage)
}

// Reply is one record read from a reply topic.
type Reply struct {
	// Meta is the record's meta: headers as gRPC response metadata; nil
	// when it has none.
	Meta metadata.MD
	// Value is a response message, the record's own value (not a copy);
	// nil on the final record.
	Value []byte
	// End marks the final (null-value) record.
	End bool
	// Code and Message are the final record's status.
	Code    codes.Code
	Message string
}

// ParseReply reads a reply record: its correlation id (the header, else the
// record key) and the reply. A record with neither is not a reply: ok is
// false. A meta: header that cannot be gRPC metadata is skipped and, when
// skipped is not nil, reported to it.
func (l Layout) ParseReply(rec *kgo.Record, skipped func(header string, err error)) (id string, rep *Reply, ok bool) {
	n := l.names
	var code, msg string
	var hasCode bool
	rep = &Reply{Value: rec.Value, End: rec.Value == nil}
	for _, h := range rec.Headers {
		switch {
		case h.Key == n.CorrelationID:
			id = string(h.Value)
		case h.Key == n.Status:
			code, hasCode = string(h.Value), true
		case h.Key == n.Message:
			msg = string(h.Value)
		default:
			var err error
			if rep.Meta, err = addMetadata(rep.Meta, h, n.MetaPrefix); err != nil && skipped != nil {
				skipped(h.Key, err)
			}
		}
	}
	if id == "" {
		// Zilla keys replies by correlation id too; take the key when the
		// header is missing.
		id = string(rec.Key)
	}
	if id == "" {
		return "", nil, false
	}
	if rep.End {
		rep.Code, rep.Message = parseStatus(code, hasCode, msg)
	}
	return id, rep, true
}

// parseStatus turns the final record's status headers into a gRPC status.
// No status header means OK, as on a request stream's own null record (the
// echo layout, where requests are their own replies).
func parseStatus(code string, has bool, msg string) (codes.Code, string) {
	if !has {
		return codes.OK, ""
	}
	n, err := strconv.ParseUint(strings.TrimSpace(code), 10, 32)
	if err != nil {
		return codes.Internal, fmt.Sprintf("backend replied with status %q, which is not a gRPC status code (message %q)", code, msg)
	}
	if n > uint64(codes.Unauthenticated) {
		return codes.Unknown, msg
	}
	return codes.Code(n), msg
}
