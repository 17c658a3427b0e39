package produce

import (
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fieldpath"
)

// requestFields is what a route reads from the request messages of one
// method: whether they must decode as its input type and pass its
// buf.validate rules, and the key and headers made from fields of a call's
// first message.
type requestFields struct {
	in       protoreflect.MessageDescriptor
	validate bool
	// rules are the input type's buf.validate rules, checked on every
	// request message; nil without validate or without rules.
	rules   *rules
	key     *fieldpath.Template
	headers []fieldpath.Header
}

// newRequestFields compiles cfg's validate (with the input type's
// buf.validate rules), key_from_request and headers_from_request against
// in; nil when the route uses none.
func newRequestFields(cfg *config.ProduceRoute, in protoreflect.MessageDescriptor) (*requestFields, error) {
	if !cfg.Validate && cfg.KeyFromRequest == "" && len(cfg.HeadersFromRequest) == 0 {
		return nil, nil
	}
	f := &requestFields{in: in, validate: cfg.Validate}
	if cfg.Validate {
		r, err := newRules(in)
		if err != nil {
			return nil, fmt.Errorf("produce.validate: %w", err)
		}
		f.rules = r
	}
	if cfg.KeyFromRequest != "" {
		t, err := fieldpath.ParseTemplate(in, cfg.KeyFromRequest)
		if err != nil {
			return nil, fmt.Errorf("produce.key_from_request: %w", err)
		}
		f.key = &t
	}
	for _, h := range cfg.HeadersFromRequest {
		t, err := fieldpath.ParseTemplate(in, h.Value)
		if err != nil {
			return nil, fmt.Errorf("produce.headers_from_request.%s: %w", h.Name, err)
		}
		f.headers = append(f.headers, fieldpath.Header{Name: h.Name, Value: t})
	}
	return f, nil
}

// decode decodes request message n (counted from 1) of a call; the error
// is the INVALID_ARGUMENT the caller gets.
func (f *requestFields) decode(value []byte, n int) (protoreflect.Message, error) {
	m := dynamicpb.NewMessage(f.in)
	if err := proto.Unmarshal(value, m); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "request message %d is not a %s: %v; nothing of it was written", n, f.in.FullName(), err)
	}
	if f.rules != nil {
		if err := f.rules.check(m, n); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// apply sets the call's key and adds its headers from m, the call's first
// request message.
func (f *requestFields) apply(c *call, m protoreflect.Message) {
	if f.key != nil {
		c.key = f.key.AppendTo(nil, m)
	}
	if len(f.headers) > 0 {
		// A copy: the call's headers may be shared with other records.
		c.headers = fieldpath.AppendHeaders(slices.Clip(c.headers), f.headers, m)
	}
}
