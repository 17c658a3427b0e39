// Command ferry serves gRPC services over Apache Kafka. See the README.
package main

import (
	"os"

	"github.com/ferryproxy/ferry/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
