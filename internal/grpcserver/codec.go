package grpcserver

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Frame is one gRPC message as raw protobuf bytes. Ferry's catch-all handler
// sends and receives Frames, so payloads are never decoded on the hot path.
type Frame struct {
	Bytes []byte
}

// codec is the server's "proto" codec: it passes Frames through untouched
// and hands every other message (health, reflection) to grpc-go's own proto
// codec.
type codec struct {
	proto encoding.CodecV2
}

var _ encoding.CodecV2 = codec{}

func newCodec() codec {
	return codec{proto: encoding.GetCodecV2(proto.Name)}
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.Bytes)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		// Materialize copies: the buffers are pooled and reused once this
		// returns, while the bytes live on in a Kafka record.
		f.Bytes = data.Materialize()
		return nil
	}
	if c.proto == nil {
		return fmt.Errorf("no proto codec registered")
	}
	return c.proto.Unmarshal(data, v)
}

func (codec) Name() string { return proto.Name }
