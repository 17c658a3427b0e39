package fetch

import (
	"fmt"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/fieldpath"
)

// requestFilters are a route's filters that take values from the call's
// request message, compiled against one method's input type: one entry
// per configured filter, in order.
type requestFilters struct {
	in      protoreflect.MessageDescriptor
	filters []filterTemplates
}

type filterTemplates struct {
	key     *fieldpath.Template
	headers map[string]fieldpath.Template
}

// usesRequest reports whether any filter takes values from the request.
func usesRequest(fs []config.FetchFilter) bool {
	for _, f := range fs {
		if f.KeyFromRequest != "" || len(f.HeadersFromRequest) > 0 {
			return true
		}
	}
	return false
}

// newRequestFilters compiles the filters' request templates against in.
func newRequestFilters(fs []config.FetchFilter, in protoreflect.MessageDescriptor) (*requestFilters, error) {
	rf := &requestFilters{in: in, filters: make([]filterTemplates, len(fs))}
	for i, f := range fs {
		if f.KeyFromRequest != "" {
			t, err := fieldpath.ParseTemplate(in, f.KeyFromRequest)
			if err != nil {
				return nil, fmt.Errorf("filters[%d].key_from_request: %w", i, err)
			}
			rf.filters[i].key = &t
		}
		names := make([]string, 0, len(f.HeadersFromRequest))
		for h := range f.HeadersFromRequest {
			names = append(names, h)
		}
		sort.Strings(names)
		for _, h := range names {
			t, err := fieldpath.ParseTemplate(in, f.HeadersFromRequest[h])
			if err != nil {
				return nil, fmt.Errorf("filters[%d].headers_from_request.%s: %w", i, h, err)
			}
			if rf.filters[i].headers == nil {
				rf.filters[i].headers = map[string]fieldpath.Template{}
			}
			rf.filters[i].headers[h] = t
		}
	}
	return rf, nil
}

// decode decodes the call's request; the error is the INVALID_ARGUMENT
// the caller gets.
func (rf *requestFilters) decode(b []byte) (protoreflect.Message, error) {
	m := dynamicpb.NewMessage(rf.in)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request is not a %s: %v", rf.in.FullName(), err)
	}
	return m, nil
}

// fill sets filter i's key and headers from the request message m.
func (rf *requestFilters) fill(i int, f *filter, m protoreflect.Message) {
	ft := rf.filters[i]
	if ft.key != nil {
		f.key, f.hasKey = ft.key.AppendTo(nil, m), true
	}
	for h, t := range ft.headers {
		f.headers[h] = t.AppendTo(nil, m)
	}
}
