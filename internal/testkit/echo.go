package testkit

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// This file is a gRPC client of the echo example's methods (and of any
// method whose messages hold a string in field 1) that needs no generated
// code: messages are *[]byte, encoded and decoded by Echo and Unecho.

// RawCodec sends and receives *[]byte as they are, as the "proto" codec:
// grpc.WithDefaultCallOptions(grpc.ForceCodecV2(testkit.RawCodec{})).
type RawCodec struct{}

var _ encoding.CodecV2 = RawCodec{}

// Marshal sends the bytes v points to.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

// Unmarshal copies the message into the slice v points to.
func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// Name is the codec's content subtype.
func (RawCodec) Name() string { return "proto" }

// EchoService is the path prefix of the echo example's methods.
const EchoService = "/grpc.examples.echo.Echo/"

// EchoResult is what an echo call returned.
type EchoResult struct {
	Header, Trailer metadata.MD
	Msgs            []string
	Err             error
}

// EchoCall makes a call of any kind to EchoService+method on cc, which
// must use RawCodec: it sends every request, half-closes and reads every
// response.
func EchoCall(ctx context.Context, cc *grpc.ClientConn, method string, md metadata.MD, reqs ...string) EchoResult {
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, EchoService+method)
	if err != nil {
		return EchoResult{Err: err}
	}
	for _, r := range reqs {
		b := Echo(r)
		if err := s.SendMsg(&b); err != nil {
			break // the status comes from RecvMsg
		}
	}
	if err := s.CloseSend(); err != nil {
		return EchoResult{Err: err}
	}
	var res EchoResult
	for {
		var b []byte
		err := s.RecvMsg(&b)
		if err == io.EOF {
			break
		}
		if err != nil {
			res.Err = err
			break
		}
		res.Msgs = append(res.Msgs, Unecho(b))
	}
	res.Header, _ = s.Header()
	res.Trailer = s.Trailer()
	return res
}

// Echo encodes an EchoRequest/EchoResponse{message: s}.
func Echo(s string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// Unecho decodes field 1 of an Echo or Fanout message; a message that
// does not decode is described instead.
func Unecho(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Sprintf("<bad message %x>", b)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return fmt.Sprintf("<bad message %x>", b)
			}
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Sprintf("<bad message %x>", b)
		}
		b = b[n:]
	}
	return ""
}
