package faults_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echopb "github.com/ferryproxy/ferry/examples/proxy/echo"
	"github.com/ferryproxy/ferry/internal/testkit"
)

// The environment that turns the suite on and shapes it.
const (
	// enableEnv must be 1 for the suite to run: it stops and kills the
	// broker scripts/kafka.sh runs (FERRY_KAFKA_DIR, FERRY_KAFKA_PORT and
	// FERRY_KAFKA_CONTROLLER_PORT name it), so it must never do so by
	// accident.
	enableEnv = "FERRY_FAULT_KAFKA"
	// longEnv set to 1 runs the long mode: more load, longer outages and
	// several faults per scenario.
	longEnv = "FERRY_FAULT_LONG"
)

// The environment of the echo server, which is this test binary started
// again with roleEnv=echo.
const (
	roleEnv     = "FERRY_FAULTS_ROLE"
	echoAddrEnv = "FERRY_FAULTS_ECHO_ADDR"
	echoLogEnv  = "FERRY_FAULTS_ECHO_LOG"
)

// suite is what TestMain prepared for the tests.
var suite struct {
	skip    string // why the tests skip; empty when they run
	root    string // the repository
	bin     string // the ferry binary built from it
	brokers string // the broker scripts/kafka.sh runs

	mu      sync.Mutex
	reports []report // every scenario's counts, for the summary
}

// kit gives the tests topics and clients of the broker; TestMain points
// FERRY_TEST_BROKERS at scripts/kafka.sh's broker before its first use.
var kit = testkit.NewBroker(4)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "echo" {
		os.Exit(serveEcho())
	}
	os.Exit(run(m))
}

// run builds ferry and makes sure the broker runs, runs the tests, prints
// the summary of every scenario's counts and leaves the broker as it found
// it: running if it was, stopped if the suite started it.
func run(m *testing.M) int {
	if os.Getenv(enableEnv) != "1" {
		suite.skip = enableEnv + "=1 is not set: the fault suite stops and kills the broker scripts/kafka.sh runs (see docs/FAULTS.md)"
		return m.Run()
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	suite.root = filepath.Join(wd, "..", "..")
	tmp, err := os.MkdirTemp("", "ferry-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	suite.bin = filepath.Join(tmp, "ferry")
	build := exec.Command("go", "build", "-o", suite.bin, "./cmd/ferry")
	build.Dir = suite.root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: building ferry: %v\n%s", err, out)
		return 1
	}
	_, statusErr := kafkaSH("status", false)
	suite.brokers, err = kafkaSH("start", false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	if statusErr != nil {
		defer func() {
			if _, err := kafkaSH("stop", false); err != nil {
				fmt.Fprintln(os.Stderr, "faults:", err)
			}
		}()
	}
	os.Setenv("FERRY_TEST_BROKERS", suite.brokers)
	code := m.Run()
	printSummary()
	return code
}

// kafkaSH runs scripts/kafka.sh cmd and returns what it printed on stdout
// (start prints the broker's address). keep sets FERRY_KAFKA_KEEP=1, so
// that start reuses the broker's data.
func kafkaSH(cmd string, keep bool) (string, error) {
	c := exec.Command("bash", filepath.Join(suite.root, "scripts", "kafka.sh"), cmd)
	c.Env = os.Environ()
	if keep {
		c.Env = append(c.Env, "FERRY_KAFKA_KEEP=1")
	}
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("scripts/kafka.sh %s: %w\n%s", cmd, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// setup skips t unless the suite runs.
func setup(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}

// serveEcho is the echo server process: the example's Echo service whose
// UnaryEcho sleeps for the time its request names and appends a line per
// execution to the file echoLogEnv names, so that the counts survive the
// process being killed and started again.
func serveEcho() int {
	f, err := os.OpenFile(os.Getenv(echoLogEnv), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	lis, err := net.Listen("tcp", os.Getenv(echoAddrEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	s := grpc.NewServer()
	echopb.RegisterEchoServer(s, &countingEcho{log: f})
	fmt.Printf("echo server listening on %s\n", lis.Addr())
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	return 0
}

// countingEcho is the echo server's service.
type countingEcho struct {
	echopb.UnimplementedEchoServer
	log *os.File
}

// UnaryEcho records "start KEY CORRELATION-ID" when it begins, sleeps for
// the duration after "sleep=" in the message, then records "end" (or
// "cancel" when the back end gave up the call first) and echoes the
// message. KEY is the call's idempotency-key metadata, which Ferry's back
// end sends with every call.
func (e *countingEcho) UnaryEcho(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	key, corr := first(md.Get("idempotency-key")), first(md.Get("ferry-correlation-id"))
	if key == "" || corr == "" {
		return nil, status.Error(codes.InvalidArgument, "the call has no idempotency-key or ferry-correlation-id metadata")
	}
	sleep, err := sleepOf(req.GetMessage())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	e.record("start", key, corr)
	select {
	case <-time.After(sleep):
	case <-ctx.Done():
		e.record("cancel", key, corr)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	e.record("end", key, corr)
	return &echopb.EchoResponse{Message: req.GetMessage()}, nil
}

// record appends one line with a single write, which O_APPEND keeps whole
// among concurrent calls and across restarts of the process.
func (e *countingEcho) record(what, key, corr string) {
	if _, err := fmt.Fprintf(e.log, "%s %s %s\n", what, key, corr); err != nil {
		fmt.Fprintln(os.Stderr, "echo: recording an execution:", err)
		os.Exit(1)
	}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// sleepOf reads the duration after "sleep=" in an echo message such as
// "KEY sleep=1.5s".
func sleepOf(msg string) (time.Duration, error) {
	_, s, ok := strings.Cut(msg, "sleep=")
	if !ok {
		return 0, errors.New("the message names no sleep=DURATION")
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, errors.New("the message's sleep= names no duration")
	}
	d, err := time.ParseDuration(fields[0])
	if err != nil {
		return 0, fmt.Errorf("parsing the message's sleep: %w", err)
	}
	return d, nil
}
