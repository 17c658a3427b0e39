package web

import (
	"fmt"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// JSONCodec returns vanguard's JSON codec, except that a body it cannot
// decode is the client's error, INVALID_ARGUMENT (HTTP 400), not
// vanguard's UNKNOWN (500). With strict, a field the message does not have
// is such an error too, rather than dropped (the Connect protocol's
// default, which lets clients of a newer schema call).
func JSONCodec(strict bool) func(vanguard.TypeResolver) vanguard.Codec {
	return func(res vanguard.TypeResolver) vanguard.Codec {
		c := vanguard.NewJSONCodec(res)
		c.UnmarshalOptions.DiscardUnknown = !strict
		return jsonCodec{c}
	}
}

type jsonCodec struct{ *vanguard.JSONCodec }

func (c jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	return badBody(c.JSONCodec.Unmarshal(data, msg))
}

func (c jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badBody(c.JSONCodec.UnmarshalField(data, msg, field))
}

func badBody(err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("decoding the JSON body: %w", err))
}
