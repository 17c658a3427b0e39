package grpcserver

import healthpb "google.golang.org/grpc/health/grpc_health_v1"

// SetServing reports the server as a whole (service "") and every service
// it serves as SERVING or NOT_SERVING, for example NOT_SERVING while Kafka
// cannot be reached. It does nothing without listeners.grpc.health, and
// after Stop began: a stopping server stays NOT_SERVING.
func (s *Server) SetServing(serving bool) {
	if s.health == nil {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	for _, name := range s.healthNames {
		s.health.SetServingStatus(name, st)
	}
}
