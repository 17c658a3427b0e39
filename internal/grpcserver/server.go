// Package grpcserver is Ferry's gRPC face: one server whose catch-all
// handler serves every method of the loaded protos with raw protobuf
// frames, beside grpc.health.v1 and server reflection for those services.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/ferryproxy/ferry/internal/frame"
	"github.com/ferryproxy/ferry/internal/protoreg"
)

// Options configure a Server.
type Options struct {
	Reflection bool
	Health     bool
	// MaxRecvMessageSize bounds one request message, in bytes. grpc-go
	// refuses a larger message from its length prefix, before reading it,
	// so nothing of it reaches a route or Kafka; it answers
	// RESOURCE_EXHAUSTED "grpc: received message larger than max (N vs.
	// limit)" itself, from inside RecvMsg, so the text cannot be Ferry's.
	MaxRecvMessageSize int
	// MaxConcurrentStreams bounds the calls per connection; zero means
	// unlimited, which grpc-go clients then read as 100.
	MaxConcurrentStreams int
	// ShutdownTimeout bounds the graceful stop before calls are cancelled.
	ShutdownTimeout time.Duration
	Registry        *protoreg.Registry
	// Handler serves every method that is not health or reflection. It
	// exchanges *frame.Frame messages with the stream.
	Handler grpc.StreamHandler
	// Services are Ferry's own services (the Kafka APIs), registered on
	// the server; they take precedence over Handler for their methods and
	// health reports on them.
	Services []Service
	// ServerOptions are added to the server's own, after them: the edge
	// chain's interceptors and stats handlers.
	ServerOptions []grpc.ServerOption
	Logger        *slog.Logger
}

// Service is a gRPC service to register: its description, as
// protoc-gen-go-grpc generates it, and its implementation.
type Service struct {
	Desc *grpc.ServiceDesc
	Impl any
}

// Server is the gRPC server.
type Server struct {
	opts   Options
	srv    *grpc.Server
	health *health.Server
	// healthNames are the services health reports on besides "".
	healthNames []string
	closeOnce   sync.Once
}

// New builds the server; nothing listens until Serve. Close stops it.
func New(opts Options) *Server {
	s := &Server{opts: opts}
	sopts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(frame.Codec{}),
		// Request frames are read into buffers that the read fills.
		experimental.BufferPool(frame.Pool()),
		grpc.UnknownServiceHandler(opts.Handler),
		grpc.MaxRecvMsgSize(opts.MaxRecvMessageSize),
	}
	if opts.MaxConcurrentStreams > 0 {
		sopts = append(sopts, grpc.MaxConcurrentStreams(uint32(opts.MaxConcurrentStreams)))
	}
	s.srv = grpc.NewServer(append(sopts, opts.ServerOptions...)...)
	for _, svc := range opts.Services {
		s.srv.RegisterService(svc.Desc, svc.Impl)
	}
	if opts.Health {
		own := s.srv.GetServiceInfo()
		s.health = health.NewServer()
		healthpb.RegisterHealthServer(s.srv, s.health)
		for _, sd := range opts.Registry.Services() {
			s.healthNames = append(s.healthNames, string(sd.FullName()))
		}
		for name := range own {
			s.healthNames = append(s.healthNames, name)
		}
		for _, name := range s.healthNames {
			s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
	}
	if opts.Reflection {
		ro := reflection.ServerOptions{
			Services:           services{s},
			DescriptorResolver: resolver{opts.Registry.Files()},
		}
		reflectionv1.RegisterServerReflectionServer(s.srv, reflection.NewServerV1(ro))
		reflectionv1alpha.RegisterServerReflectionServer(s.srv, reflection.NewServer(ro))
	}
	return s
}

// GRPC returns the underlying server, for the REST transcoder in front of
// Ferry's own services.
func (s *Server) GRPC() *grpc.Server { return s.srv }

// Serve accepts connections on lis until Close. It returns nil after
// Close. Like grpc.Server's, it blocks: the caller owns the goroutine, and
// chooses the listener (tests serve on their own).
func (s *Server) Serve(lis net.Listener) error {
	err := s.srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close marks every service NOT_SERVING and lets running calls finish for
// up to the shutdown timeout, then cancels what is left. When ctx ends
// first, it cancels them at once and says so. Serve returns once Close
// began. Close is safe to call more than once, and when Serve never ran.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() { err = s.close(ctx) })
	return err
}

func (s *Server) close(ctx context.Context) error {
	if s.health != nil {
		s.health.Shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.opts.ShutdownTimeout)
	defer t.Stop()
	var err error
	select {
	case <-done:
		return nil
	case <-t.C:
		s.opts.Logger.Warn("graceful stop timed out: cancelling the calls still running", "timeout", s.opts.ShutdownTimeout)
	case <-ctx.Done():
		err = fmt.Errorf("cancelling the gRPC calls still running: %w", ctx.Err())
	}
	s.srv.Stop()
	<-done
	return err
}

// services lists, for reflection, the served proto services beside the
// ones registered on the server itself.
type services struct{ s *Server }

func (p services) GetServiceInfo() map[string]grpc.ServiceInfo {
	m := p.s.srv.GetServiceInfo()
	for _, sd := range p.s.opts.Registry.Services() {
		info := grpc.ServiceInfo{Metadata: sd.ParentFile().Path()}
		ms := sd.Methods()
		for i := 0; i < ms.Len(); i++ {
			md := ms.Get(i)
			info.Methods = append(info.Methods, grpc.MethodInfo{
				Name:           string(md.Name()),
				IsClientStream: md.IsStreamingClient(),
				IsServerStream: md.IsStreamingServer(),
			})
		}
		m[string(sd.FullName())] = info
	}
	return m
}

// resolver finds descriptors in the loaded protos first, then in the ones
// compiled into Ferry (health, reflection).
type resolver struct{ files *protoregistry.Files }

func (r resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (r resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
