package app_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// ferryProcess is Ferry run as a process of its own, so that a test can
// stop, continue or kill it as an operating system would.
type ferryProcess struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// startFerryProcess runs bin with a config of the test brokers as cluster
// "default", a gRPC listener on a free port, and yaml (back ends) after
// them. The process is killed when the test ends, and its log shown if the
// test failed.
func startFerryProcess(t testing.TB, bin, name, yaml string) *ferryProcess {
	t.Helper()
	cfgFile := filepath.Join(t.TempDir(), name+".yaml")
	writeFile(t, cfgFile, fmt.Sprintf("clusters: [{name: default%s}]\nlisteners: {grpc: {address: \"127.0.0.1:0\"}, admin: {address: \"\"}}\n%s",
		kit.ClusterYAML(t), yaml))
	p := &ferryProcess{cmd: exec.Command(bin, "serve", "-c", cfgFile), log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("log of ferry process %s:\n%s", name, p.log.String())
		}
	})
	return p
}

func (p *ferryProcess) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("sending %v to ferry: %v", sig, err)
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *ferryProcess) kill(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued on some systems
	_ = p.cmd.Process.Kill()
	<-p.done
}

// lockedBuffer is a buffer a process's output goroutines may write to
// while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitGroupEmpty waits until group has no members: the broker ended the
// session of every member.
func waitGroupEmpty(t testing.TB, ctx context.Context, group string) {
	t.Helper()
	adm := kadmClient(t)
	for ctx.Err() == nil {
		gs, err := adm.DescribeGroups(ctx, group)
		if err == nil && len(gs[group].Members) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("group %s still had members when the test's deadline came", group)
}

// TestBackendPartitionsLostAndBack: a back end whose calls are running when
// it loses its partitions (its process stalls past the group session, as
// in a long pause or a network partition, and the broker ends its
// session) abandons those calls, and when the same instance is assigned
// the partitions again it executes their requests again: every call is
// answered. The server blocks the first execution of each request until
// the back end gives it up, and answers later ones at once.
func TestBackendPartitionsLostAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ferry and waits for a group session to expire")
	}
	kit.CheckLeaks(t)
	bin := buildFerry(t)

	const n = 10
	started := make(chan string, n)
	var mu sync.Mutex
	runs := map[string]int{}
	srv := startEchoServer(t, "echo")
	srv.block = func(ctx context.Context, msg string) error {
		mu.Lock()
		runs[msg]++
		first := runs[msg] == 1
		mu.Unlock()
		if !first {
			return nil
		}
		started <- msg
		<-ctx.Done()
		return ctx.Err()
	}

	req, rep := kit.Topic(t, 2, nil), kit.Topic(t, 2, nil)
	group := "g-" + req
	proc := startFerryProcess(t, bin, "backend", fmt.Sprintf(`
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    session_timeout: 6s
    commit_interval: 100ms
    concurrency: %d
    deadline: 60s
`, req, srv.addr, group, 2*n))
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 90s}
`, req, rep))
	waitGroupMembers(t, group, 1)

	ctx := testkit.Context(t, 60*time.Second)
	wait := unaryMany(t, ctx, dial(t, front), n)
	for range n {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the server did not see every request before the deadline")
		}
	}
	// Every call is running. Stall the back end until the broker has ended
	// its session, then let it go on: it finds its partitions lost.
	proc.signal(t, syscall.SIGSTOP)
	waitGroupEmpty(t, ctx, group)
	proc.signal(t, syscall.SIGCONT)
	wait()
	mu.Lock()
	defer mu.Unlock()
	for msg, k := range runs {
		if k < 2 {
			t.Errorf("request %s was executed %d times, want again after the partitions came back", msg, k)
		}
	}
}

// TestBackendStaticRestart: a back end with a group_instance_id that is
// killed (SIGKILL) and restarted with the same id takes its partitions back
// as soon as it rejoins, instead of waiting for the group session (45 s
// here, the default) to end its dead predecessor's session. The call made
// after the restart has a deadline well under the session timeout. The
// test logs how long the restarted instance took to answer.
func TestBackendStaticRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ferry")
	}
	kit.CheckLeaks(t)
	bin := buildFerry(t)
	srv := startEchoServer(t, "echo")
	req, rep := kit.Topic(t, 2, nil), kit.Topic(t, 2, nil)
	group := "g-" + req
	backendYAML := fmt.Sprintf(`
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    group_instance_id: ferry-test-1
    session_timeout: 45s
    commit_interval: 100ms
`, req, srv.addr, group)
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
`, req, rep))
	cc := dial(t, front)
	victim := startFerryProcess(t, bin, "first", backendYAML)
	waitGroupMembers(t, group, 1)
	if res := call(testkit.Context(t, 30*time.Second), cc, "UnaryEcho", nil, "before"); res.err != nil {
		t.Fatalf("call before the crash: %v", res.err)
	}

	victim.kill(t)
	killed := time.Now()
	// FERRY_TEST_RESTART_DELAY (e.g. 5s) leaves the instance down for a
	// while, as a process supervisor would, for measuring.
	if d, err := time.ParseDuration(os.Getenv("FERRY_TEST_RESTART_DELAY")); err == nil {
		time.Sleep(d)
	}
	startFerryProcess(t, bin, "restarted", backendYAML)
	restarted := time.Now()
	res := call(testkit.Context(t, 20*time.Second), cc, "UnaryEcho", nil, "after")
	if res.err != nil || len(res.msgs) != 1 || res.msgs[0] != "after" {
		t.Fatalf("call after the restart = %q, %v; want it answered before the dead session (45 s) times out", res.msgs, res.err)
	}
	t.Logf("the restarted instance answered %s after its restart (%s after the kill); session timeout 45s",
		time.Since(restarted).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
}

// TestBackendStaticGracefulLeave: a static member that shuts down in an
// orderly way leaves its group, which franz-go does not do for a static
// member, so the other instance takes its partitions at once rather than
// after the session timeout.
func TestBackendStaticGracefulLeave(t *testing.T) {
	kit.CheckLeaks(t)
	srv := startEchoServer(t, "echo")
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 4, nil)
	group := "g-" + req
	backendOnly := func(id string) string {
		return fmt.Sprintf(`  []
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    group_instance_id: %s
    session_timeout: 45s
    commit_interval: 100ms
`, req, srv.addr, group, id)
	}
	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 60s}
`, req, rep))
	leaving := startFerry(t, backendOnly("ferry-test-leaving"))
	startFerry(t, backendOnly("ferry-test-staying"))
	waitGroupMembers(t, group, 2)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	leaving.Close(ctx)
	cancel()
	// Within waitGroupMembers' 30 s, well before the 45 s session timeout.
	waitGroupMembers(t, group, 1)
	wait := unaryMany(t, testkit.Context(t, 30*time.Second), dial(t, front), 20)
	wait()
}
