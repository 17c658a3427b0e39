package faults_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestBackendKill kills one of two back-end instances with SIGKILL while
// its calls run, and starts it again after a while. Its partitions move to
// the other instance once its session times out, and some come back when it
// rejoins.
func TestBackendKill(t *testing.T) {
	setup(t)
	r := newRig(t, 2)
	victim := r.backends[0]
	r.runScenario(func() {
		victim.kill()
		time.Sleep(r.m.backendDown)
		victim.start()
	})
}

// TestPartitionLostAndReturned stops the only back end (SIGSTOP) until the
// group has expelled it, then lets it run again (SIGCONT): it finds its
// partitions lost with calls running, rejoins and gets the same partitions
// back.
func TestPartitionLostAndReturned(t *testing.T) {
	setup(t)
	r := newRig(t, 1)
	b := r.backends[0]
	r.runScenario(func() {
		b.signal(syscall.SIGSTOP)
		r.waitGroup("the stopped back end expelled", func(g kadm.DescribedGroup) bool { return len(g.Members) == 0 })
		b.signal(syscall.SIGCONT)
		r.waitGroup("the back end holding its partitions again", func(g kadm.DescribedGroup) bool {
			return g.State == "Stable" && membersWithPartitions(g) == 1
		})
	})
}

// TestBrokerStop stops the broker cleanly (SIGTERM) while calls run, for
// longer than the back end's session timeout, and starts it again with its
// data.
func TestBrokerStop(t *testing.T) {
	setup(t)
	r := newRig(t, 1)
	r.runScenario(func() { r.brokerOutage("stop") })
}

// TestBrokerKill kills the broker (SIGKILL) while calls run, for longer
// than the back end's session timeout, and starts it again with its data.
func TestBrokerKill(t *testing.T) {
	setup(t)
	r := newRig(t, 1)
	r.runScenario(func() { r.brokerOutage("kill") })
}

// brokerOutage takes the broker down with scripts/kafka.sh how ("stop" or
// "kill"), waits the mode's outage and starts it again on its data.
func (r *rig) brokerOutage(how string) {
	r.t.Helper()
	t0 := time.Now()
	if _, err := kafkaSH(how, false); err != nil {
		r.t.Fatal(err)
	}
	t1 := time.Now()
	time.Sleep(r.m.brokerDown)
	t2 := time.Now()
	if _, err := kafkaSH("start", true); err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("broker %s took %s, down %s, start on its data took %s", how, t1.Sub(t0).Round(time.Millisecond),
		r.m.brokerDown, time.Since(t2).Round(time.Millisecond))
}

// TestServerKill kills the gRPC echo server (SIGKILL) while calls run and
// starts it again on the same address after a while.
func TestServerKill(t *testing.T) {
	setup(t)
	r := newRig(t, 1)
	r.runScenario(func() {
		r.echo.kill()
		time.Sleep(r.m.serverDown)
		r.echo.start()
	})
}
