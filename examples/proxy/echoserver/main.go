// Command echoserver is the plain gRPC server of the proxy example: it
// serves grpc.examples.echo.Echo and knows nothing of Kafka.
package main

import (
	"flag"
	"log"
	"net"

	"google.golang.org/grpc"

	"github.com/ferryproxy/ferry/examples/proxy/echo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "address to listen on")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	echo.RegisterEchoServer(s, &echo.Server{Name: "echoserver"})
	log.Printf("echo server listening on %s", lis.Addr())
	log.Fatal(s.Serve(lis))
}
