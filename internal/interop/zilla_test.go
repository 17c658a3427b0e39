package interop_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// zilla is a running Zilla engine.
type zilla struct {
	addr string // its gRPC listener
	cmd  *exec.Cmd
	dir  string // the zilla.yaml, its protos and ZILLA_DIRECTORY
	done chan struct{}

	mu  sync.Mutex
	log []string // the last lines it printed
}

// zillaStart bounds Zilla's start-up: 5-30 s on two cores.
const zillaStart = 120 * time.Second

// zillaConfig is the zilla.yaml of the run: a gRPC server on port
// {{zport}} whose echo methods are produced to zreq (reply-to zrep) and
// whose fanout method fetches f1 or f3 by the x-topic metadata, and a
// kafka-grpc back end on freq (reply-to frep) calling the echo server.
func zillaConfig(run string, ts topics, target string) string {
	host, port, _ := net.SplitHostPort(target)
	r := strings.NewReplacer(
		"{{run}}", run, "{{zreq}}", ts.zreq, "{{zrep}}", ts.zrep, "{{freq}}", ts.freq, "{{frep}}", ts.frep,
		"{{f1}}", ts.f1, "{{f3}}", ts.f3, "{{host}}", host, "{{port}}", port)
	return r.Replace(`name: interop-{{run}}
catalogs:
  protos:
    type: filesystem
    options:
      subjects:
        echo:
          path: protos/echo.proto
        fanout:
          path: protos/fanout.proto
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: {{zport}}
    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    options:
      versions: [h2]
    exit: north_grpc_server
  north_grpc_server:
    type: grpc
    kind: server
    catalog:
      protos:
        - subject: echo
        - subject: fanout
    routes:
      - when:
          - method: grpc.examples.echo.Echo/*
          - method: example.FanoutService/*
        exit: north_grpc_kafka
  north_grpc_kafka:
    type: grpc-kafka
    kind: proxy
    routes:
      - when:
          - method: grpc.examples.echo.Echo/*
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: {{zreq}}
          acks: leader_only
          reply-to: {{zrep}}
      - when:
          - method: example.FanoutService/FanoutServerStream
            metadata:
              x-topic: one
        exit: north_kafka_cache_client
        with:
          capability: fetch
          topic: {{f1}}
      - when:
          - method: example.FanoutService/FanoutServerStream
            metadata:
              x-topic: three
        exit: north_kafka_cache_client
        with:
          capability: fetch
          topic: {{f3}}
  north_kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: south_kafka_cache_server
  south_kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: south_kafka_client
  south_kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
  west_kafka_grpc:
    type: kafka-grpc
    kind: remote_server
    entry: north_kafka_cache_client
    options:
      acks: leader_only
    routes:
      - when:
          - topic: {{freq}}
            reply-to: {{frep}}
            method: grpc.examples.echo.Echo/*
        exit: west_grpc_client
        with:
          scheme: http
          authority: {{host}}:{{port}}
  west_grpc_client:
    type: grpc
    kind: client
    routes:
      - when:
          - method: grpc.examples.echo.Echo/*
        exit: west_http_client
  west_http_client:
    type: http
    kind: client
    options:
      versions: [h2]
    exit: west_tcp_client
  west_tcp_client:
    type: tcp
    kind: client
    options:
      host: {{host}}
      port: {{port}}
telemetry:
  exporters:
    stdout_logs_exporter:
      type: stdout
`)
}

// zillaFanoutProto is fanout.proto without its import of
// google/protobuf/empty.proto, which Zilla's filesystem catalog does not
// resolve: the request is an empty message either way.
const zillaFanoutProto = `syntax = "proto3";
package example;
message Empty {}
service FanoutService {
  rpc FanoutServerStream(Empty) returns (stream FanoutMessage);
}
message FanoutMessage {
  string message = 1;
}
`

// startZilla writes yaml and its protos to a new temporary folder and runs
// Zilla from zdir on it until it logs ENGINE_STARTED. The zilla returned,
// even with an error, must be stopped.
func startZilla(zdir, bootstrap, yaml string) (*zilla, error) {
	script := filepath.Join(zdir, "zilla")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("FERRY_ZILLA=%s holds no zilla script: %w", zdir, err)
	}
	java := os.Getenv("JAVA_HOME_25")
	if java == "" {
		java = "/usr/lib/jvm/temurin-25-jdk-amd64"
	}
	if _, err := os.Stat(filepath.Join(java, "bin", "java")); err != nil {
		return nil, fmt.Errorf("zilla needs a JDK 25 (JAVA_HOME_25 or %s): %w", java, err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := lis.Addr().String()
	lis.Close()
	_, port, _ := net.SplitHostPort(addr)

	dir, err := os.MkdirTemp("", "ferry-interop-zilla-")
	if err != nil {
		return nil, err
	}
	z := &zilla{addr: addr, dir: dir, done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(dir, "protos"), 0o755); err != nil {
		return z, err
	}
	echoProto, err := os.ReadFile(filepath.Join("..", "..", "examples", "echo", "echo.proto"))
	if err != nil {
		return z, err
	}
	for name, content := range map[string]string{
		"zilla.yaml":          strings.ReplaceAll(yaml, "{{zport}}", port),
		"protos/echo.proto":   string(echoProto),
		"protos/fanout.proto": zillaFanoutProto,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return z, err
		}
	}
	z.cmd = exec.Command(script, filepath.Join(dir, "zilla.yaml"))
	z.cmd.Env = append(os.Environ(),
		"KAFKA_BOOTSTRAP_SERVER="+bootstrap,
		"ZILLA_DIRECTORY="+filepath.Join(dir, "engine"),
		"JAVA_HOME_25="+java)
	// The JVM dies with the test binary, however the binary ends.
	z.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := z.cmd.StdoutPipe()
	if err != nil {
		return z, err
	}
	z.cmd.Stderr = z.cmd.Stdout
	if err := z.cmd.Start(); err != nil {
		return z, fmt.Errorf("starting zilla: %w", err)
	}
	started := make(chan struct{})
	go z.read(out, started)
	go func() { _ = z.cmd.Wait(); close(z.done) }()
	select {
	case <-started:
		return z, nil
	case <-z.done:
		return z, fmt.Errorf("zilla exited before ENGINE_STARTED:\n%s", z.tail())
	case <-time.After(zillaStart):
		return z, fmt.Errorf("zilla did not log ENGINE_STARTED within %s:\n%s", zillaStart, z.tail())
	}
}

// read keeps Zilla's last log lines and closes started at ENGINE_STARTED.
// FERRY_TEST_LOG=debug copies them to stderr.
func (z *zilla) read(r io.Reader, started chan struct{}) {
	echo := os.Getenv("FERRY_TEST_LOG") == "debug"
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	once := sync.Once{}
	for sc.Scan() {
		line := sc.Text()
		if echo {
			fmt.Fprintln(os.Stderr, "zilla:", line)
		}
		z.mu.Lock()
		z.log = append(z.log, line)
		if len(z.log) > 200 {
			z.log = z.log[len(z.log)-200:]
		}
		z.mu.Unlock()
		if strings.Contains(line, "ENGINE_STARTED") {
			once.Do(func() { close(started) })
		}
	}
}

func (z *zilla) tail() string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return strings.Join(z.log, "\n")
}

// stop kills Zilla's process group and deletes its folder.
func (z *zilla) stop() {
	if z.cmd != nil && z.cmd.Process != nil {
		_ = syscall.Kill(-z.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-z.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-z.cmd.Process.Pid, syscall.SIGKILL)
			<-z.done
		}
	}
	os.RemoveAll(z.dir)
}
