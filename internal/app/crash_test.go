package app_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestBackendCrash kills a back-end instance (a separate ferry process)
// with SIGKILL while its calls are in flight. Its partitions go to the
// other instance of the group once the session times out, which redoes
// what was not committed: every client call still completes with exactly
// one reply. The test reports how many requests the server saw twice.
func TestBackendCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ferry and waits for a group session to time out")
	}
	kit.CheckLeaks(t)
	bin := buildFerry(t)

	srv := startEchoServer(t, "echo")
	srv.delay = 200 * time.Millisecond
	req, rep := kit.Topic(t, 4, nil), kit.Topic(t, 4, nil)
	group := "g-" + req
	backendYAML := fmt.Sprintf(`
backends:
  - name: echo
    topic: %s
    target: %s
    group_id: %s
    session_timeout: 6s
    commit_interval: 100ms
    concurrency: 4
`, req, srv.addr, group)

	// The instance to kill runs in its own process.
	cfgFile := filepath.Join(t.TempDir(), "backend.yaml")
	writeFile(t, cfgFile, fmt.Sprintf("clusters: [{name: default%s}]\nlisteners: {grpc: {address: \"127.0.0.1:0\"}, admin: {address: \"\"}}\n%s",
		kit.ClusterYAML(t), backendYAML))
	victim := exec.Command(bin, "serve", "-c", cfgFile)
	var victimLog strings.Builder
	victim.Stdout, victim.Stderr = &victimLog, &victimLog
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = victim.Process.Kill()
			_ = victim.Wait()
		}
	})

	front := startFerry(t, fmt.Sprintf(`
  - when: [{method: grpc.examples.echo.Echo/*}]
    produce: {topic: %s, reply_to: %s, timeout: 90s}
`, req, rep))
	startFerry(t, "  []\n"+backendYAML)
	waitGroupMembers(t, group, 2)

	cc := dial(t, front)
	ctx := testkit.Context(t, 120*time.Second)
	const n = 40
	wait := unaryMany(t, ctx, cc, n)
	// Kill the victim while its calls are in flight: each takes 200 ms and
	// it runs 4 at a time, so it is busy for about a second.
	time.Sleep(500 * time.Millisecond)
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killed = true
	start := time.Now()
	wait()
	calls, twice := srv.calls()
	t.Logf("all %d calls completed %s after the kill; the server saw %d distinct requests, %d of them twice (redone after the crash)",
		n, time.Since(start).Round(time.Millisecond), calls, twice)
	if calls != n {
		t.Errorf("server saw %d distinct requests, want %d", calls, n)
	}
	if t.Failed() {
		t.Logf("killed instance's log:\n%s", victimLog.String())
	}
	_ = os.Remove(cfgFile)
}
