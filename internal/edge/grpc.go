package edge

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerOptions put the chain in front of every method of a gRPC server,
// the catch-all handler included: one unary and one stream interceptor,
// and the stats handlers.
func (ch *Chain) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(ch.unaryServer),
		grpc.ChainStreamInterceptor(ch.streamServer),
	}
	for _, h := range ch.statsHandlers {
		opts = append(opts, grpc.StatsHandler(h))
	}
	return opts
}

// DialOptions put the chain around every call made on a client
// connection, as face BackendOut with target as the peer.
func (ch *Chain) DialOptions(target string) []grpc.DialOption {
	out := outbound{ch: ch, target: target}
	opts := []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(out.unary),
		grpc.WithChainStreamInterceptor(out.stream),
	}
	for _, h := range ch.statsHandlers {
		opts = append(opts, grpc.WithStatsHandler(h))
	}
	return opts
}

// serverCall returns the call a gRPC server call belongs to: the REST
// call it was transcoded from, or a new one (fresh reports which).
func serverCall(ctx context.Context, method string) (c *Call, fresh bool) {
	if c := FromContext(ctx); c != nil {
		// A REST call transcoded in process: the chain ran already.
		c.setRPC(method)
		return c, false
	}
	c = &Call{Face: GRPC, Method: method, Start: time.Now(), rpc: method}
	md, _ := metadata.FromIncomingContext(ctx)
	var given string
	if ids := md.Get(RequestIDKey); len(ids) > 0 {
		given = ids[0]
	}
	c.RequestID = requestID(given)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.Peer = p.Addr.String()
	}
	return c, true
}

func (ch *Chain) unaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, fresh := serverCall(ctx, info.FullMethod)
	if !fresh {
		return handler(ctx, req)
	}
	// Set before the handler runs, the header goes out with the
	// handler's own, whenever it sends them.
	_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDKey, c.RequestID))
	var resp any
	err := ch.run(ctx, c, func(ctx context.Context) error {
		var err error
		resp, err = handler(ctx, req)
		return err
	})
	return resp, err
}

func (ch *Chain) streamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c, fresh := serverCall(ss.Context(), info.FullMethod)
	if !fresh {
		return handler(srv, ss)
	}
	_ = ss.SetHeader(metadata.Pairs(RequestIDKey, c.RequestID))
	return ch.run(ss.Context(), c, func(ctx context.Context) error {
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	})
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

// call returns the Call of an outbound call and its context, which
// carries the request id out: the one the call's metadata has when sane,
// else the one of the call it is made for, else a new one.
func (o outbound) call(ctx context.Context, method string) (*Call, context.Context) {
	c := &Call{Face: BackendOut, Method: method, Peer: o.target, Start: time.Now(), rpc: method}
	md, _ := metadata.FromOutgoingContext(ctx)
	ids := md.Get(RequestIDKey)
	switch {
	case len(ids) > 0 && SaneRequestID(ids[0]):
		c.RequestID = ids[0]
		return c, ctx
	case FromContext(ctx) != nil:
		c.RequestID = FromContext(ctx).RequestID
	default:
		c.RequestID = requestID("")
	}
	md = md.Copy()
	md.Set(RequestIDKey, c.RequestID)
	return c, metadata.NewOutgoingContext(ctx, md)
}

func (o outbound) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c, ctx := o.call(ctx, method)
	return o.ch.run(ctx, c, func(ctx context.Context) error {
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// stream runs the chain from the stream's opening to the end of its last
// response (RecvMsg's error, io.EOF for OK), on a goroutine the chain
// owns until then: an interceptor's "after" runs when the call ends, not
// when NewStream returns.
func (o outbound) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c, ctx := o.call(ctx, method)
	type opened struct {
		cs  grpc.ClientStream
		err error
	}
	ready := make(chan opened, 1)
	ended := make(chan error, 1)
	go func() {
		sent := false
		err := o.ch.run(ctx, c, func(ctx context.Context) error {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			sent = true
			if err != nil {
				ready <- opened{err: err}
				return err
			}
			ready <- opened{cs: &clientStream{ClientStream: cs, ended: ended}}
			// grpc-go's contract: a caller reads until an error or
			// cancels the context; either ends the call.
			select {
			case err := <-ended:
				return err
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		})
		if !sent {
			ready <- opened{err: err} // an interceptor refused the call
		}
	}()
	r := <-ready
	return r.cs, r.err
}

// clientStream reports the end of an outbound stream once: the first
// error RecvMsg returns.
type clientStream struct {
	grpc.ClientStream
	once  sync.Once
	ended chan<- error
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.once.Do(func() { s.ended <- statusOf(err) })
	}
	return err
}

// statusOf is the error a stream ended with: nil for io.EOF, the end of a
// call that succeeded.
func statusOf(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
