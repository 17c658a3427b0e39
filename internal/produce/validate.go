package produce

import (
	"errors"
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// rules checks request messages of one input type against the buf.validate
// rules written in its .proto file (protovalidate). It is built once, when
// a route binds a method, and is safe for concurrent use.
type rules struct {
	in protoreflect.MessageDescriptor
	v  protovalidate.Validator
}

// newRules returns the rules of in, or nil when neither in nor any message
// reachable from its fields carries buf.validate rules, so that such
// requests cost no more than their decoding. An expression that does not
// compile is an error here rather than on every call.
func newRules(in protoreflect.MessageDescriptor) (*rules, error) {
	has, err := hasRules(in, map[protoreflect.FullName]bool{})
	if err != nil || !has {
		return nil, err
	}
	v, err := protovalidate.New(protovalidate.WithMessageDescriptors(in))
	if err != nil {
		return nil, fmt.Errorf("preparing the buf.validate rules of %s: %w", in.FullName(), err)
	}
	// An empty message reaches every rule's compilation; whether it
	// passes them does not matter here.
	var cerr *protovalidate.CompilationError
	if err := v.Validate(dynamicpb.NewMessage(in)); errors.As(err, &cerr) {
		return nil, fmt.Errorf("compiling the buf.validate rules of %s: %w", in.FullName(), err)
	}
	return &rules{in: in, v: v}, nil
}

// hasRules reports whether md, its oneofs or fields, or the messages its
// fields hold carry buf.validate rules. seen stops recursive types.
func hasRules(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) (bool, error) {
	if seen[md.FullName()] {
		return false, nil
	}
	seen[md.FullName()] = true
	if r, err := protovalidate.ResolveMessageRules(md); err != nil || r != nil {
		return r != nil, err
	}
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		if r, err := protovalidate.ResolveOneofRules(oneofs.Get(i)); err != nil || r != nil {
			return r != nil, err
		}
	}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if r, err := protovalidate.ResolveFieldRules(fd); err != nil || r != nil {
			return r != nil, err
		}
		if fd.IsMap() {
			fd = fd.MapValue()
		}
		if sub := fd.Message(); sub != nil {
			if has, err := hasRules(sub, seen); err != nil || has {
				return has, err
			}
		}
	}
	return false, nil
}

// check returns nil when m, request message n (counted from 1) of a call,
// passes the rules. Otherwise the error is the INVALID_ARGUMENT the caller
// gets, naming each violation's field path, message and rule id, with the
// violations attached as a buf.validate.Violations detail.
func (r *rules) check(m protoreflect.Message, n int) error {
	err := r.v.Validate(m.Interface())
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that fails to evaluate is a fault of the .proto file,
		// not of the caller.
		return status.Errorf(codes.Internal, "checking request message %d against the buf.validate rules of %s: %v; nothing of it was written", n, r.in.FullName(), err)
	}
	st := status.New(codes.InvalidArgument, fmt.Sprintf("request message %d is not a valid %s: %s; nothing of it was written", n, r.in.FullName(), describe(verr)))
	if d, derr := st.WithDetails(protoadapt.MessageV1Of(verr.ToProto())); derr == nil {
		st = d
	}
	return st.Err()
}

// describe writes verr's violations as "path: message [rule id]", joined
// by "; ".
func describe(verr *protovalidate.ValidationError) string {
	var b strings.Builder
	for i, v := range verr.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		if path := protovalidate.FieldPathString(v.Proto.GetField()); path != "" {
			b.WriteString(path)
			b.WriteString(": ")
		}
		msg := v.Proto.GetMessage()
		if msg == "" {
			msg = "rule not met"
		}
		b.WriteString(msg)
		if id := v.Proto.GetRuleId(); id != "" {
			b.WriteString(" [")
			b.WriteString(id)
			b.WriteString("]")
		}
	}
	return b.String()
}
