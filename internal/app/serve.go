package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ferryproxy/ferry/internal/edge"
	"github.com/ferryproxy/ferry/internal/kafkaapi/ferryapi"
	"github.com/ferryproxy/ferry/internal/kafkaapi/pixy"
	"github.com/ferryproxy/ferry/internal/protoreg"
	"github.com/ferryproxy/ferry/internal/web"
)

// startServers listens on the gRPC and the HTTP addresses and serves
// both, as one component: they stop together, within one shutdown
// timeout.
func (a *App) startServers(ctx context.Context, reg *protoreg.Registry) error {
	mux, err := a.httpFaces()
	if err != nil {
		return err
	}
	g := a.cfg.Listeners.GRPC
	a.lis, err = net.Listen("tcp", g.Address)
	if err != nil {
		return fmt.Errorf("listening for gRPC on %s (listeners.grpc.address): %w", g.Address, err)
	}
	if g.Web.Enabled {
		if err := a.startWeb(reg); err != nil {
			a.lis.Close()
			return err
		}
	}
	h := a.cfg.Listeners.HTTP
	if mux.Len() > 0 {
		a.httpLis, err = net.Listen("tcp", h.Address)
		if err != nil {
			a.lis.Close()
			return fmt.Errorf("listening for HTTP on %s (listeners.http.address): %w", h.Address, err)
		}
		tlsCfg, err := h.TLS.ServerConfig(a.logger)
		if err != nil {
			a.lis.Close()
			a.httpLis.Close()
			return fmt.Errorf("serving HTTPS (listeners.http.tls): %w", err)
		}
		a.httpSrv = &http.Server{
			Handler:           web.CORS(h.CORS, a.countHTTP(mux)),
			TLSConfig:         tlsCfg,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
		}
	}
	return a.add(ctx, "the servers", servers{a, reg})
}

// grpcServerOptions are the gRPC server's options from the edge chain and,
// when listeners.grpc.tls is set, its TLS credentials.
func (a *App) grpcServerOptions() ([]grpc.ServerOption, error) {
	// The count comes after the edge chain, so that the access log
	// records the calls refused while Ferry stops.
	opts := append(a.edge.ServerOptions(),
		grpc.ChainUnaryInterceptor(a.countUnary),
		grpc.ChainStreamInterceptor(a.countStream))
	c, err := a.cfg.Listeners.GRPC.TLS.ServerConfig(a.logger)
	if err != nil {
		return nil, fmt.Errorf("serving gRPC over TLS (listeners.grpc.tls): %w", err)
	}
	a.grpcTLS = c
	switch {
	case c == nil:
	case a.cfg.Listeners.GRPC.Web.Enabled:
		// The Split runs the handshakes, to sort the connections.
		opts = append(opts, grpc.Creds(web.Handshaken{}))
	default:
		opts = append(opts, grpc.Creds(credentials.NewTLS(c)))
	}
	return opts, nil
}

// httpFaces returns the handler of the HTTP listener with every face it
// serves: Ferry's Kafka API under /v1/ (transcoded to its gRPC service)
// and Kafka-Pixy's paths. It serves none when listeners.http.address is
// empty. Without a face, Ferry does not listen for HTTP at all: a port
// answering only 404 would be held for nothing.
func (a *App) httpFaces() (*edge.Mux, error) {
	mux := a.edge.NewMux()
	h := a.cfg.Listeners.HTTP
	k := a.cfg.KafkaAPI
	if h.Address == "" {
		return mux, nil
	}
	if k.Enabled {
		rest, err := ferryapi.NewRESTHandler(a.server.GRPC(), h.MaxRequestBodySize)
		if err != nil {
			return nil, fmt.Errorf("serving Ferry's Kafka API over REST: %w", err)
		}
		mux.Handle("/v1/", edge.REST, rest)
	}
	if k.Pixy {
		mux.Handle("/", edge.PixyREST, pixy.NewHandler(a.pixy, h.MaxRequestBodySize))
	}
	return mux, nil
}

// servers are the gRPC and the HTTP server as one component of App: they
// stop together, within one shutdown timeout, and their Serve goroutines
// are App's, which reports why the gRPC server stopped (Wait).
type servers struct {
	a   *App
	reg *protoreg.Registry
}

// Start starts the servers' Serve goroutines; Close waits for them.
func (s servers) Start(context.Context) error {
	a := s.a
	if a.split != nil {
		a.serving.Go(func() {
			if err := a.split.Serve(); err != nil {
				a.logger.Error("accepting gRPC connections failed", "error", err)
			}
		})
		a.serving.Go(func() { a.serveErr <- a.server.Serve(a.split.GRPC()) })
		a.serving.Go(func() {
			if err := a.webSrv.Serve(a.split.HTTP()); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("serving gRPC-Web, Connect and REST failed", "error", err)
			}
		})
	} else {
		a.serving.Go(func() { a.serveErr <- a.server.Serve(a.lis) })
	}
	services := make([]string, 0, len(s.reg.Services()))
	for _, sd := range s.reg.Services() {
		services = append(services, string(sd.FullName()))
	}
	k := a.cfg.KafkaAPI
	a.logger.Info("serving gRPC", "address", a.lis.Addr().String(), "tls", a.cfg.Listeners.GRPC.TLS.Enabled(), "services", services, "routes", len(a.cfg.Routes),
		"web", a.split != nil, "cors", a.cfg.Listeners.GRPC.Web.CORS.Enabled(), "kafka_api", k.Enabled, "kafka_pixy", k.Pixy)
	if a.httpSrv == nil {
		return nil
	}
	// Serve sets up HTTP/2 and may fill TLSConfig in: decide before.
	tlsOn := a.httpSrv.TLSConfig != nil
	serve := a.httpSrv.Serve
	if tlsOn {
		// The certificate comes from TLSConfig.GetCertificate.
		serve = func(l net.Listener) error { return a.httpSrv.ServeTLS(l, "", "") }
	}
	a.serving.Go(func() {
		if err := serve(a.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("HTTP server failed", "error", err)
		}
	})
	a.logger.Info("serving HTTP", "address", a.httpLis.Addr().String(), "tls", tlsOn, "kafka_api", k.Enabled, "kafka_pixy", k.Pixy)
	return nil
}

// Close stops both servers together, within one shutdown timeout. Until
// the calls running finish, the listeners stay open and new calls are
// answered UNAVAILABLE with the reason (Close of App began refusing
// them); then both servers stop, which closes the listeners, and Close
// waits for their Serve goroutines. When the timeout passes first, the
// calls still running are cancelled and the connections closed; when ctx
// ends first, the same, and Close says so.
func (s servers) Close(ctx context.Context) error {
	a := s.a
	timeout := a.cfg.Listeners.GRPC.ShutdownTimeout
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-a.calls.stop():
	case <-sctx.Done():
		if ctx.Err() == nil {
			a.logger.Warn("graceful stop timed out: cancelling the calls still running", "timeout", timeout)
		}
	}
	var stopping sync.WaitGroup
	var grpcErr, httpErr, webErr error
	if a.webSrv != nil {
		stopping.Go(func() {
			if err := a.webSrv.Shutdown(sctx); err != nil {
				a.webSrv.Close()
				if ctx.Err() != nil {
					webErr = fmt.Errorf("closing the gRPC-Web, Connect and REST connections still open: %w", ctx.Err())
				}
			}
		})
	}
	if a.httpSrv != nil {
		stopping.Go(func() {
			if err := a.httpSrv.Shutdown(sctx); err != nil {
				a.httpSrv.Close()
				if ctx.Err() != nil {
					httpErr = fmt.Errorf("closing the HTTP connections still open: %w", ctx.Err())
				}
			}
		})
	}
	stopping.Go(func() {
		// The shutdown timeout is sctx's: an error that it ended is
		// the timeout's, already logged, not ctx's.
		if err := a.server.Close(sctx); err != nil && ctx.Err() != nil {
			grpcErr = err
		}
	})
	stopping.Wait()
	a.serving.Wait()
	return errors.Join(grpcErr, httpErr, webErr)
}

// startWeb splits the gRPC listener's connections between the gRPC
// server and an HTTP server of gRPC-Web, Connect and REST
// (listeners.grpc.web).
func (a *App) startWeb(reg *protoreg.Registry) error {
	g := a.cfg.Listeners.GRPC
	h, err := web.NewHandler(a.server.GRPC(), reg.Services(), g.MaxRecvMessageSize, g.Web)
	if err != nil {
		return err
	}
	a.web = h
	a.split = web.NewSplit(a.lis, a.grpcTLS, a.logger)
	a.webSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: g.MaxConcurrentStreams},
	}
	return nil
}
