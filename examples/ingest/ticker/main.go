// Command ticker is the gRPC server of Ferry's ingest example: it serves
// example.ingest.Ticker, whose Ticks method streams numbered ticks from a
// requested start on.
package main

import (
	"flag"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/ferryproxy/ferry/examples/ingest/tick"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50061", "address to listen on")
	interval := flag.Duration("interval", time.Second, "time between two ticks when a request gives none")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	tick.RegisterTickerServer(s, &tick.Server{Interval: *interval})
	log.Printf("ticker listening on %s", lis.Addr())
	log.Fatal(s.Serve(lis))
}
