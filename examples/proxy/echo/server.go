package echo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Server is a plain gRPC implementation of grpc.examples.echo.Echo, the
// back end of the proxy example.
type Server struct {
	UnimplementedEchoServer
	// Name is sent back in the x-echo-server response header.
	Name string
}

var _ EchoServer = (*Server)(nil)

func (s *Server) header(ctx context.Context) error {
	return grpc.SetHeader(ctx, metadata.Pairs("x-echo-server", s.Name))
}

// UnaryEcho returns the request's message.
func (s *Server) UnaryEcho(ctx context.Context, req *EchoRequest) (*EchoResponse, error) {
	if err := s.header(ctx); err != nil {
		return nil, err
	}
	return &EchoResponse{Message: req.GetMessage()}, nil
}

// ServerStreamingEcho sends the request's message back ten times.
func (s *Server) ServerStreamingEcho(req *EchoRequest, stream grpc.ServerStreamingServer[EchoResponse]) error {
	if err := s.header(stream.Context()); err != nil {
		return err
	}
	for i := 0; i < 10; i++ {
		if err := stream.Send(&EchoResponse{Message: fmt.Sprintf("%s %d", req.GetMessage(), i)}); err != nil {
			return err
		}
	}
	return nil
}

// ClientStreamingEcho returns every message received, joined by commas.
func (s *Server) ClientStreamingEcho(stream grpc.ClientStreamingServer[EchoRequest, EchoResponse]) error {
	if err := s.header(stream.Context()); err != nil {
		return err
	}
	var msgs []string
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&EchoResponse{Message: strings.Join(msgs, ",")})
		}
		if err != nil {
			return err
		}
		msgs = append(msgs, req.GetMessage())
	}
}

// BidirectionalStreamingEcho answers each message as it arrives.
func (s *Server) BidirectionalStreamingEcho(stream grpc.BidiStreamingServer[EchoRequest, EchoResponse]) error {
	if err := s.header(stream.Context()); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&EchoResponse{Message: req.GetMessage()}); err != nil {
			return err
		}
	}
}
