package ferryapi

import (
	"strconv"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	kafkav1 "github.com/ferryproxy/ferry/api/ferry/kafka/v1"
	"github.com/ferryproxy/ferry/internal/kafkaapi"
)

const (
	contentTypeNDJSON = "application/x-ndjson"
	contentTypeSSE    = "text/event-stream"

	// maxChunk and maxChunkMessages bound what Subscribe gathers into one
	// HttpBody when several messages are ready at once.
	maxChunk         = 64 << 10
	maxChunkMessages = 1000
)

// messageJSON encodes a Message as one NDJSON line or SSE event. It is the
// shape of the REST Poll response's messages (the transcoder also emits
// unpopulated fields), so one decoder reads both: partition 0 and offset
// 0 are spelled out rather than left for the reader to infer.
var messageJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// Subscribe streams messages as NDJSON lines or server-sent events, for
// REST clients (NewRESTHandler streams the HttpBody chunks as they come).
//
// Flow control without auto_ack: the stream delivers nothing more while
// max_unacked messages it delivered are outstanding, as the engine counts
// them (Session.Outstanding): acknowledged by anyone (through any face),
// handed back, expired after the ack timeout or moved away by a rebalance,
// a message no longer counts, and the engine wakes the stream
// (Session.WaitOutstandingBelow).
//
// The first chunk carries no data: it sets the content type, so the HTTP
// response starts once the session is open, before any message.
func (s *Server) Subscribe(req *kafkav1.SubscribeRequest, stream grpc.ServerStreamingServer[httpbody.HttpBody]) error {
	if err := required("topic", req.GetTopic(), "group", req.GetGroup()); err != nil {
		return err
	}
	var sse bool
	switch req.GetFormat() {
	case "", "ndjson":
	case "sse":
		sse = true
	default:
		return invalid("format", "%q is not \"ndjson\" or \"sse\"", req.GetFormat())
	}
	maxUnacked := int(req.GetMaxUnacked())
	switch {
	case maxUnacked < 0:
		return invalid("max_unacked", "%d is negative", maxUnacked)
	case maxUnacked == 0:
		maxUnacked = defaultMaxUnacked
	}
	cluster, group, topic := req.GetCluster(), req.GetGroup(), req.GetTopic()
	ctx := stream.Context()
	sess, err := s.svc.Open(ctx, cluster, group, topic)
	if err != nil {
		return err
	}
	defer sess.Close(true)

	body := &httpbody.HttpBody{ContentType: contentTypeNDJSON}
	if sse {
		body.ContentType = contentTypeSSE
	}
	if err := stream.Send(body); err != nil {
		return err
	}
	var (
		msgBuf messageBuf // reused: each message is encoded before the next
		buf    []byte
		sent   []*kafkaapi.Message // of the chunk, for auto_ack
	)
	for {
		room := maxChunkMessages
		for !req.GetAutoAck() {
			if n := maxUnacked - sess.Outstanding(); n > 0 {
				room = min(room, n)
				break
			}
			if err := sess.WaitOutstandingBelow(ctx, maxUnacked); err != nil {
				return streamErr(ctx)
			}
		}
		m, ok := sess.TryNext()
		if !ok {
			if m, err = sess.Next(ctx); err != nil {
				if ctx.Err() != nil {
					return streamErr(ctx)
				}
				return err
			}
		}
		buf, sent = buf[:0], sent[:0]
		for {
			if buf, err = appendMessage(buf, msgBuf.fill(m, req.GetValueFormat()), sse); err != nil {
				return status.Errorf(codes.Internal, "encoding message %d-%d as JSON: %v", m.Partition, m.Offset, err)
			}
			sent = append(sent, m)
			if len(sent) >= room || len(buf) >= maxChunk {
				break
			}
			if m, ok = sess.TryNext(); !ok {
				break
			}
		}
		body.Data = buf
		if err := stream.Send(body); err != nil {
			return err
		}
		if req.GetAutoAck() {
			s.autoAck(ctx, sess, cluster, group, topic, sent)
		}
	}
}

// appendMessage appends m as an NDJSON line or an SSE event whose id is
// "<partition>-<offset>".
func appendMessage(buf []byte, m *kafkav1.Message, sse bool) ([]byte, error) {
	if sse {
		buf = append(buf, "id: "...)
		buf = strconv.AppendInt(buf, int64(m.Partition), 10)
		buf = append(buf, '-')
		buf = strconv.AppendInt(buf, m.Offset, 10)
		buf = append(buf, "\ndata: "...)
	}
	buf, err := messageJSON.MarshalAppend(buf, m)
	if err != nil {
		return buf, err
	}
	if sse {
		return append(buf, "\n\n"...), nil
	}
	return append(buf, '\n'), nil
}
