package interop_test

import (
	"context"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	// Registered, gzip makes the test clients send grpc-accept-encoding,
	// which both front ends write as meta:grpc-accept-encoding.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echopb "github.com/ferryproxy/ferry/examples/proxy/echo"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// serverName is the echo server's x-echo-server response header.
const serverName = "interop"

// echoServer is the gRPC server both back ends call: the proxy example's
// echo server that also sends a trailer (x-trailer: done), answers the
// x-echo-bin request metadata back as a response header, counts the
// unary calls by message and fails a unary call whose message starts with
// "fail" with PERMISSION_DENIED.
type echoServer struct {
	echopb.Server
	addr string
	gs   *grpc.Server
	done chan struct{}

	mu   sync.Mutex
	seen map[string]int // unary message → calls
}

func startEchoServer() (*echoServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &echoServer{Server: echopb.Server{Name: serverName}, addr: lis.Addr().String(), seen: map[string]int{}, done: make(chan struct{})}
	s.gs = grpc.NewServer()
	echopb.RegisterEchoServer(s.gs, s)
	go func() { defer close(s.done); _ = s.gs.Serve(lis) }()
	return s, nil
}

func (s *echoServer) stop() { s.gs.Stop(); <-s.done }

// calls returns how many unary calls carried msg.
func (s *echoServer) calls(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[msg]
}

// extra sends the trailer and the echoed binary header.
func extra(ctx context.Context, setHeader, setTrailer func(metadata.MD) error) error {
	if err := setTrailer(metadata.Pairs("x-trailer", "done")); err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-echo-bin"); len(v) > 0 {
		return setHeader(metadata.MD{"x-echo-bin": v})
	}
	return nil
}

func (s *echoServer) UnaryEcho(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	s.mu.Lock()
	s.seen[req.GetMessage()]++
	s.mu.Unlock()
	err := extra(ctx, func(md metadata.MD) error { return grpc.SetHeader(ctx, md) },
		func(md metadata.MD) error { return grpc.SetTrailer(ctx, md) })
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(req.GetMessage(), "fail") {
		return nil, status.Errorf(codes.PermissionDenied, "denied: %s", req.GetMessage())
	}
	return s.Server.UnaryEcho(ctx, req)
}

func streamExtra(ss grpc.ServerStream) error {
	return extra(ss.Context(), ss.SetHeader, func(md metadata.MD) error { ss.SetTrailer(md); return nil })
}

func (s *echoServer) ServerStreamingEcho(req *echopb.EchoRequest, ss grpc.ServerStreamingServer[echopb.EchoResponse]) error {
	if err := streamExtra(ss); err != nil {
		return err
	}
	return s.Server.ServerStreamingEcho(req, ss)
}

func (s *echoServer) ClientStreamingEcho(ss grpc.ClientStreamingServer[echopb.EchoRequest, echopb.EchoResponse]) error {
	if err := streamExtra(ss); err != nil {
		return err
	}
	return s.Server.ClientStreamingEcho(ss)
}

func (s *echoServer) BidirectionalStreamingEcho(ss grpc.BidiStreamingServer[echopb.EchoRequest, echopb.EchoResponse]) error {
	if err := streamExtra(ss); err != nil {
		return err
	}
	return s.Server.BidirectionalStreamingEcho(ss)
}

// rawCodec sends and receives *[]byte as they are.
type rawCodec = testkit.RawCodec

// result is what a call returned.
type result struct {
	header, trailer metadata.MD
	msgs            []string
	err             error
}

// call makes a call of any kind: it sends every request, half-closes and
// reads every response, decoding Echo messages.
func call(ctx context.Context, cc *grpc.ClientConn, method string, md metadata.MD, reqs ...string) result {
	r := testkit.EchoCall(ctx, cc, method, md, reqs...)
	return result{header: r.Header, trailer: r.Trailer, msgs: r.Msgs, err: r.Err}
}

// echo encodes an EchoRequest/EchoResponse{message: s}.
func echo(s string) []byte { return testkit.Echo(s) }

// unecho decodes field 1 of an Echo or Fanout message.
func unecho(b []byte) string { return testkit.Unecho(b) }
