// Package frame carries gRPC messages through Ferry as raw protobuf
// bytes: Frame, the codec that passes Frames through undecoded, and the
// buffer pool the codec marshals into and the gRPC server reads requests
// into. The gRPC server and the back ends' gRPC client both use it, so a
// payload crosses Ferry without being decoded, whichever side it enters.
package frame

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Frame is one gRPC message as raw protobuf bytes. Ferry's catch-all
// handler and the back ends' gRPC client send and receive Frames, so
// payloads are never decoded on the hot path.
type Frame struct {
	Bytes []byte
	// Buf, when set, is Bytes as grpc-go's buffers, built once for a
	// message sent to many streams: each send would otherwise allocate
	// its own. Its buffers must not be reference counted (mem.SliceBuffer,
	// whose Free does nothing), since every send frees them.
	Buf mem.BufferSlice
}

// Codec is Ferry's "proto" codec, on the server and on the back ends'
// client: it passes Frames through untouched and marshals every other
// message (the Kafka API's, health, reflection) as grpc-go's own proto
// codec does, but with buffers from Pool, which skips clearing them.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Marshal returns a Frame's bytes as they are, without a copy, and
// marshals any other protobuf message.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		if f.Buf != nil {
			return f.Buf, nil
		}
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

// Unmarshal copies a message into a Frame, or decodes it into any other
// protobuf message.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
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

// Name is "proto": Ferry's frames are protobuf messages on the wire.
func (Codec) Name() string { return "proto" }
