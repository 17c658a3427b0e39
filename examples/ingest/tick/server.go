package tick

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxPayloadSize bounds a request's payload_size.
const MaxPayloadSize = 1 << 20

// Server is a plain gRPC implementation of example.ingest.Ticker.
type Server struct {
	UnimplementedTickerServer
	// Interval is the time between two ticks when a request gives none.
	// Zero: one second.
	Interval time.Duration
	// Symbols are the symbols ticks go round. Empty: AAA, BBB and CCC.
	Symbols []string

	latest atomic.Int64
}

var _ TickerServer = (*Server)(nil)

// Ticks streams ticks from the request's start on until the caller goes
// away. It sends the response header x-ticker: example first.
func (s *Server) Ticks(req *TicksRequest, stream grpc.ServerStreamingServer[Tick]) error {
	if req.GetPayloadSize() < 0 || req.GetPayloadSize() > MaxPayloadSize {
		return status.Errorf(codes.InvalidArgument, "payload_size %d is out of range 0 to %d", req.GetPayloadSize(), MaxPayloadSize)
	}
	if err := stream.SendHeader(metadata.Pairs("x-ticker", "example")); err != nil {
		return err
	}
	interval := s.Interval
	if interval == 0 {
		interval = time.Second
	}
	switch ms := req.GetIntervalMs(); {
	case ms > 0:
		interval = time.Duration(ms) * time.Millisecond
	case ms < 0:
		interval = 0
	}
	payload := make([]byte, req.GetPayloadSize())
	var wait *time.Timer
	if interval > 0 {
		wait = time.NewTimer(interval)
		defer wait.Stop()
	}
	for seq := req.GetStart(); ; seq++ {
		t := s.Tick(seq)
		t.Payload = payload
		if err := stream.Send(t); err != nil {
			return err
		}
		if wait == nil {
			continue
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-wait.C:
			wait.Reset(interval)
		}
	}
}

// Latest returns the latest tick Ticks sent.
func (s *Server) Latest(context.Context, *LatestRequest) (*Tick, error) {
	return s.Tick(s.latest.Load()), nil
}

// Tick returns tick seq: its symbol and price follow from seq alone, so
// that a tick sent again is the same but for its time.
func (s *Server) Tick(seq int64) *Tick {
	if seq > s.latest.Load() {
		s.latest.Store(seq)
	}
	symbols := s.Symbols
	if len(symbols) == 0 {
		symbols = []string{"AAA", "BBB", "CCC"}
	}
	n := int64(len(symbols))
	return &Tick{
		Seq:    seq,
		Symbol: symbols[((seq%n)+n)%n],
		Price:  math.Round((100+float64(seq%1000)/10)*100) / 100,
		Time:   timestamppb.Now(),
	}
}
