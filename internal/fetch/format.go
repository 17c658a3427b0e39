package fetch

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferryproxy/ferry/internal/config"
	"github.com/ferryproxy/ferry/internal/valueformat"
)

// jsonFrames turns the frames of a topic holding JSON into response
// messages of one method: each record value parsed as the method's output
// type and encoded as protobuf, the message id appended after it as for
// any record. A hub frames a record once for every route reading the topic,
// whatever the method, so each caller converts the records it is sent.
type jsonFrames struct {
	topic  string
	out    protoreflect.MessageDescriptor
	format *valueformat.Format
	// resume is the request metadata entry a caller resumes with.
	resume string
}

// bindFormat prepares the conversion of m's response messages when the
// route's format is json.
func (r *Route) bindFormat(m protoreflect.MethodDescriptor, path string) error {
	j, err := newJSONFrames(r.name, r.cfg, m.Output())
	if j != nil {
		r.json[path] = j
	}
	return err
}

// newJSONFrames returns the conversion of a route's records into messages
// of type out, or nil when the route's format is not json.
func newJSONFrames(route string, cfg *config.FetchRoute, out protoreflect.MessageDescriptor) (*jsonFrames, error) {
	if cfg.Format != config.FormatJSON {
		return nil, nil
	}
	f, err := valueformat.New(cfg.Format, config.JSONOptions{})
	if err != nil {
		return nil, fmt.Errorf("fetch route %s: %w", route, err)
	}
	return &jsonFrames{topic: cfg.Topic, out: out, format: f, resume: cfg.LastMessageIDMetadata}, nil
}

// frame returns e's response message. A record that is not the JSON of the
// output type ends the caller's stream with INTERNAL, naming the record and
// the message id that resumes past it: skipping it would lose a record
// without anyone knowing, and ending at it makes every caller stop there
// until someone decides to skip it (see docs/CONFIG.md, routes[].fetch.format).
//
// An entry of the hub's cache is converted once for every caller of the
// same method: the first keeps the result on the entry.
func (j *jsonFrames) frame(e *entry) ([]byte, error) {
	if c := e.conv.Load(); c != nil && c.out == j.out {
		return c.msg, nil
	}
	id := e.frame[e.vlen:]
	b, err := j.format.AppendFromJSON(make([]byte, 0, e.vlen+len(id)), j.out, e.frame[:e.vlen])
	if err != nil {
		next := "the message id of the next record"
		if raw, ierr := entryID(e); ierr == nil {
			next = EncodeIDText(raw)
		}
		return nil, status.Errorf(codes.Internal,
			"record at topic %q partition %d offset %d is not the JSON of a %s: %v; to skip it, resume with %s: %s",
			j.topic, e.part, e.off, j.out.FullName(), err, j.resume, next)
	}
	b = append(b, id...)
	e.conv.Store(&converted{out: j.out, msg: b})
	return b, nil
}

// converted is an entry's value as a message of type out, id appended.
type converted struct {
	out protoreflect.MessageDescriptor
	msg []byte
}

// entryID returns the message id appended to e's value: the position after
// it.
func entryID(e *entry) ([]byte, error) {
	b := e.frame[e.vlen:]
	_, _, n := protowire.ConsumeTag(b)
	if n < 0 {
		return nil, errors.New("no message id after the value")
	}
	id, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return nil, errors.New("a message id that does not decode")
	}
	return id, nil
}
