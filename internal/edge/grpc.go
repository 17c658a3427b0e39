package edge

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerOptions put the chain in front of every method of a gRPC server,
// the catch-all handler included: one unary and one stream interceptor
// (none while the chain is idle), and the stats handlers.
func (ch *Chain) ServerOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	if !ch.idle() {
		opts = append(opts,
			grpc.ChainUnaryInterceptor(ch.unaryServer),
			grpc.ChainStreamInterceptor(ch.streamServer))
	}
	for _, h := range ch.statsHandlers {
		opts = append(opts, grpc.StatsHandler(h))
	}
	return opts
}

// DialOptions put the chain around every call made on a client
// connection, as face BackendOut with target as the peer (not while the
// chain is idle), with the stats handlers.
func (ch *Chain) DialOptions(target string) []grpc.DialOption {
	out := outbound{ch: ch, target: target}
	var opts []grpc.DialOption
	if !ch.idle() {
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(out.unary),
			grpc.WithChainStreamInterceptor(out.stream))
	}
	for _, h := range ch.statsHandlers {
		opts = append(opts, grpc.WithStatsHandler(h))
	}
	return opts
}

// serverCall returns the call a gRPC server call belongs to: the REST
// call it was transcoded from, or a new one (fresh reports which).
func (ch *Chain) serverCall(ctx context.Context, method string) (c *Call, fresh bool) {
	if c := FromContext(ctx); c != nil {
		// A REST call transcoded in process: the chain ran already.
		c.setRPC(method)
		return c, false
	}
	c = &Call{Face: GRPC, Method: method, Start: time.Now(), rpc: method}
	var given string
	// One key, without copying the whole metadata as FromIncomingContext
	// does.
	if ids := metadata.ValueFromIncomingContext(ctx, RequestIDKey); len(ids) > 0 {
		given = ids[0]
	}
	c.RequestID = ch.requestID(given)
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			c.Peer = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.TLS = &ti.State
		}
	}
	c.header = func(key string) string {
		if vs := metadata.ValueFromIncomingContext(ctx, key); len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	return c, true
}

func (ch *Chain) unaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, fresh := ch.serverCall(ctx, info.FullMethod)
	if !fresh {
		return handler(ctx, req)
	}
	if ch.requestIDs {
		// Set before the handler runs, the header goes out with the
		// handler's own, whenever it sends them.
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDKey, c.RequestID))
	}
	ctx, err := ch.begin(ctx, c)
	if err != nil {
		ch.end(ctx, c, err)
		return nil, err
	}
	resp, err := handler(ctx, req)
	ch.end(ctx, c, err)
	return resp, err
}

func (ch *Chain) streamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c, fresh := ch.serverCall(ss.Context(), info.FullMethod)
	if !fresh {
		return handler(srv, ss)
	}
	if ch.requestIDs {
		_ = ss.SetHeader(metadata.Pairs(RequestIDKey, c.RequestID))
	}
	ctx, err := ch.begin(ss.Context(), c)
	if err != nil {
		ch.end(ctx, c, err)
		return err
	}
	err = handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	ch.end(ctx, c, err)
	return err
}

// serverStream is a stream whose context carries its Call.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// outbound is the chain on a client connection.
type outbound struct {
	ch     *Chain
	target string
}

type outboundIDKey struct{}

// WithRequestID returns ctx for an outbound call whose outgoing metadata
// carries id as x-request-id, or no request id when id is "", so the chain
// need not read the metadata. A back end, which builds each call's
// metadata itself, sets it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, outboundIDKey{}, id)
}

// call returns the Call of an outbound call and its context, which
// carries the request id out: the one the call's metadata has when sane
// (WithRequestID tells it without reading the metadata), else, when the
// chain gives calls ids, the one of the call it is made for or a new one.
func (o outbound) call(ctx context.Context, method string) (*Call, context.Context) {
	c := &Call{Face: BackendOut, Method: method, Peer: o.target, Start: time.Now(), rpc: method}
	given, told := ctx.Value(outboundIDKey{}).(string)
	if !told {
		md, _ := metadata.FromOutgoingContext(ctx)
		if ids := md.Get(RequestIDKey); len(ids) > 0 {
			given = ids[0]
		}
	}
	switch {
	case SaneRequestID(given):
		c.RequestID = given
		return c, ctx
	case !o.ch.requestIDs:
		return c, ctx
	case FromContext(ctx) != nil && FromContext(ctx).RequestID != "":
		c.RequestID = FromContext(ctx).RequestID
	default:
		c.RequestID = NewRequestID()
	}
	// A metadata value that is not a sane id is replaced.
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(RequestIDKey, c.RequestID)
	return c, metadata.NewOutgoingContext(ctx, md)
}

func (o outbound) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c, ctx := o.call(ctx, method)
	ctx, err := o.ch.begin(ctx, c)
	if err != nil {
		o.ch.end(ctx, c, err)
		return err
	}
	err = invoker(ctx, method, req, reply, cc, opts...)
	o.ch.end(ctx, c, err)
	return err
}

// stream opens an outbound stream, which ends at the RecvMsg that returns
// its last response (an error, io.EOF for OK, or the single response of a
// method that does not stream responses), or when its context ends first
// (grpc-go's contract: a caller reads until then, or cancels).
func (o outbound) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c, ctx := o.call(ctx, method)
	ctx, err := o.ch.begin(ctx, c)
	if err != nil {
		o.ch.end(ctx, c, err)
		return nil, err
	}
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		o.ch.end(ctx, c, err)
		return nil, err
	}
	s := &clientStream{ClientStream: cs, ch: o.ch, c: c, ctx: ctx, single: !desc.ServerStreams}
	// AfterFunc starts no goroutine until ctx ends; the stream's end
	// stops it.
	s.stop = context.AfterFunc(ctx, func() { s.finish(status.FromContextError(ctx.Err()).Err()) })
	return s, nil
}

// clientStream ends its call once, at its last RecvMsg or its context's
// end, whichever comes first.
type clientStream struct {
	grpc.ClientStream
	ch     *Chain
	c      *Call
	ctx    context.Context
	single bool // one response ends the call
	stop   func() bool
	ended  atomic.Bool
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil || s.single {
		s.stop()
		s.finish(statusOf(err))
	}
	return err
}

func (s *clientStream) finish(err error) {
	if s.ended.CompareAndSwap(false, true) {
		s.ch.end(s.ctx, s.c, err)
	}
}

// statusOf is the error a stream ended with: nil for io.EOF, the end of a
// call that succeeded.
func statusOf(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
