package backend

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// This file is the conversion of a back end whose format is json: request
// records hold the JSON of the method's input type, which the server gets
// as protobuf, and its responses are written back as JSON. A call converts
// its request messages in its own goroutine, not in the poll loop that
// reads every partition, and keeps them converted for its retries.

// types finds the input and output types of the call's method in the
// back end's protos, when its format is json. A method they do not define
// cannot be converted: the call is answered UNIMPLEMENTED without calling
// the server.
func (c *call) types() {
	if c.b.format == nil {
		return
	}
	reg := c.b.reg.Load()
	if reg != nil {
		if m, ok := reg.Method(c.path); ok {
			c.in, c.out = m.Desc.Input(), m.Desc.Output()
			return
		}
	}
	c.refuse(status.Errorf(codes.Unimplemented,
		"method %s is not in the protos Ferry loaded: back end %s has format json and needs the method's types to convert its messages; add its .proto under protos",
		c.path, c.b.cfg.Name))
}

// refuse ends the call with err, a status, in place of the server's
// answer: its request cannot be converted. The first refusal stands.
func (c *call) refuse(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = err
	}
}

// refusal returns why the call was refused, nil if it was not.
func (c *call) refusal() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// message returns request message i as the server takes it: the record's
// value, or on a back end with format json the value converted from JSON,
// once (a retry sends what was converted). A message that does not convert
// refuses the call with INVALID_ARGUMENT naming the field.
func (c *call) message(i int) ([]byte, error) {
	c.mu.Lock()
	v, done, err := c.msgs[i], i < c.converted, c.refused
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if c.b.format == nil || done {
		return v, nil
	}
	pb, err := c.b.format.FromJSON(c.in, v)
	if err != nil {
		err = status.Errorf(codes.InvalidArgument, "request message %d is not the JSON of a %s: %v", i+1, c.in.FullName(), err)
		c.refuse(err)
		return nil, err
	}
	c.mu.Lock()
	c.msgs[i], c.converted = pb, i+1
	c.mu.Unlock()
	return pb, nil
}

// convertRead converts the request messages read so far, so that a call
// whose request does not convert is refused before it reaches the server.
func (c *call) convertRead() error {
	if err := c.refusal(); err != nil {
		return err
	}
	if c.b.format == nil {
		return nil
	}
	c.mu.Lock()
	n := len(c.msgs)
	c.mu.Unlock()
	for i := range n {
		if _, err := c.message(i); err != nil {
			return err
		}
	}
	return nil
}

// reply returns response message n (counted from 1) as the reply record's
// value: as the server sent it, or as JSON on a back end with format json.
// One that does not convert ends the call with INTERNAL.
func (c *call) reply(msg []byte, n int) ([]byte, error) {
	if c.b.format == nil {
		return msg, nil
	}
	js, err := c.b.format.ToJSON(c.out, msg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "response message %d of %s does not convert to JSON: %v", n, c.path, err)
	}
	return js, nil
}
