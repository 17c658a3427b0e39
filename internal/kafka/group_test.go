package kafka

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferryproxy/ferry/internal/config"
)

// TestStaticMemberLeavesOnClose: a static member (group instance id set)
// that is closed leaves its group, which franz-go alone does not do for a
// static member, so its partitions move at once. Without the instance id
// the member is dynamic and franz-go leaves as usual.
func TestStaticMemberLeavesOnClose(t *testing.T) {
	e, err := StartEmbedded(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	c := NewCluster(config.Cluster{Name: "test", ClientID: "ferry-test", DialTimeout: 5 * time.Second}, e.Addrs(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.Close(context.Background())
	admCl, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)

	for _, id := range []string{"instance-1", ""} {
		group := "g-" + id
		assigned := make(chan struct{}, 1)
		cl, err := c.NewGroupClient(group, id,
			kgo.ConsumeTopics("t"), kgo.AllowAutoTopicCreation(),
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				select {
				case assigned <- struct{}{}:
				default:
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		polling := make(chan struct{})
		go func() {
			defer close(polling)
			for ctx.Err() == nil {
				cl.PollFetches(ctx)
			}
		}()
		select {
		case <-assigned:
		case <-ctx.Done():
			t.Fatalf("member %q was never assigned partitions", id)
		}
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil || len(gs[group].Members) != 1 {
			t.Fatalf("group %s before close: %+v, %v; want one member", group, gs[group], err)
		}
		if m := gs[group].Members[0]; (m.InstanceID != nil && *m.InstanceID != id) || (m.InstanceID == nil) != (id == "") {
			t.Errorf("member's instance id = %v, want %q", m.InstanceID, id)
		}
		cancel()
		<-polling
		cl.Close()
		gs, err = adm.DescribeGroups(context.Background(), group)
		if err != nil || len(gs[group].Members) != 0 {
			t.Errorf("group %s after close has %d members (%v); want none: the member left", group, len(gs[group].Members), err)
		}
	}
}

func TestMemberInstanceID(t *testing.T) {
	if got := MemberInstanceID("", "orders"); got != "" {
		t.Errorf("no id gives %q, want none (a dynamic member)", got)
	}
	if got := MemberInstanceID("host-1", "orders"); got != "host-1.orders" {
		t.Errorf("id = %q, want host-1.orders", got)
	}
	long := strings.Repeat("t", 249)
	a, b := MemberInstanceID("host-1", long), MemberInstanceID("host-1", long[1:]+"u")
	if len(a) > 249 || !strings.HasPrefix(a, "host-1.") || a == b {
		t.Errorf("ids for long topics = %q, %q; want distinct ids of at most 249 characters", a, b)
	}
}

// TestStaticLeaveSparesReplacement: a static member that closes after a
// newer member with its instance id replaced it (a restart, a Kafka API
// member opened again while the old one closed) must not remove the
// replacement from the group on its way out.
//
// It needs a real broker (FERRY_TEST_BROKERS): Kafka refuses a leave whose
// member id is not the instance's current one (FENCED_INSTANCE_ID), which
// is what protects the replacement; the embedded broker resolves a leave by
// instance id alone.
func TestStaticLeaveSparesReplacement(t *testing.T) {
	seeds := os.Getenv("FERRY_TEST_BROKERS")
	if seeds == "" {
		t.Skip("needs a real broker in FERRY_TEST_BROKERS: the embedded one does not fence leaves by member id")
	}
	c := NewCluster(config.Cluster{Name: "test", ClientID: "ferry-test", DialTimeout: 5 * time.Second}, strings.Split(seeds, ","), slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer c.Close(context.Background())
	admCl, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	group, id, topic := "ferry-test-replaced-"+suffix, "instance-1", "ferry-test-replaced-"+suffix
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	defer adm.DeleteTopics(context.Background(), topic)
	// join starts a polling member and waits until the group lists it.
	join := func() (cl *kgo.Client, stop func()) {
		cl, err := c.NewGroupClient(group, id, kgo.ConsumeTopics(topic))
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for pctx.Err() == nil {
				cl.PollFetches(pctx)
			}
		}()
		for {
			if m, _ := cl.GroupMetadata(); m != "" {
				gs, err := adm.DescribeGroups(ctx, group)
				if err == nil && len(gs[group].Members) == 1 && gs[group].Members[0].MemberID == m {
					return cl, func() { pcancel(); <-done }
				}
			}
			if ctx.Err() != nil {
				t.Fatal("member never joined")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	old, stopOld := join()
	stopOld() // the old member stops polling; the new one replaces it
	replacement, stopNew := join()
	defer func() { stopNew(); replacement.Close() }()
	want, _ := replacement.GroupMetadata()
	old.Close()

	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil || len(gs[group].Members) != 1 || gs[group].Members[0].MemberID != want {
		t.Errorf("after the replaced member closed: group %+v, %v; want only the replacement %s", gs[group].Members, err, want)
	}
}
