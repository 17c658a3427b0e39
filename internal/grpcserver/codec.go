package grpcserver

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Frame is one gRPC message as raw protobuf bytes. Ferry's catch-all handler
// sends and receives Frames, so payloads are never decoded on the hot path.
type Frame struct {
	Bytes []byte
}

// codec is the server's "proto" codec: it passes Frames through untouched
// and marshals every other message (the Kafka API's, health, reflection)
// as grpc-go's own proto codec does, but with buffers from pool, which
// skips clearing them.
type codec struct{}

var _ encoding.CodecV2 = codec{}

func newCodec() codec { return codec{} }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.Bytes)}, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshalling %T: not a protobuf message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses what Size just computed; m is not changed
	// meanwhile.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		// Materialize copies: the buffers are pooled and reused once this
		// returns, while the bytes live on in a Kafka record.
		f.Bytes = data.Materialize()
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshalling %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(pool)
	defer buf.Free()
	// proto.Unmarshal copies bytes fields, so buf can go back to the pool.
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func (codec) Name() string { return "proto" }
