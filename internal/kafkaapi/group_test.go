package kafkaapi

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/sparseacks"
	"github.com/ferryproxy/ferry/internal/testkit"
)

func TestEngineTwoInstancesSplitPartitions(t *testing.T) {
	topic := kit.Topic(t, 4, nil)
	group := testkit.Name(t, "group")
	a := startEngine(t, engineConfig())
	b := startEngine(t, engineConfig())

	sa, err := a.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	// Once both are in the group, each owns two partitions.
	deadline := time.Now().Add(20 * time.Second)
	for {
		owned := a.ownedPartitions(group, topic) + "|" + b.ownedPartitions(group, topic)
		if owned == "[0 1]|[2 3]" || owned == "[2 3]|[0 1]" || owned == "[0 2]|[1 3]" || owned == "[1 3]|[0 2]" ||
			owned == "[0 3]|[1 2]" || owned == "[1 2]|[0 3]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions owned: %s", owned)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ends := map[int32]int64{}
	for _, r := range produceN(t, a, topic, 40, -1) {
		ends[r.Partition] = max(ends[r.Partition], r.Offset+1)
	}
	// Both take until all 40 are acknowledged.
	var mu sync.Mutex
	seen := map[string]int{}
	parts := map[*Session]map[int32]bool{sa: {}, sb: {}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, ss := range []*Session{sa, sb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				m, err := ss.Next(ctx)
				if err != nil {
					return
				}
				_ = ss.Ack(m.Partition, m.Offset)
				mu.Lock()
				seen[string(m.Value)]++
				parts[ss][m.Partition] = true
				done := len(seen) == 40
				mu.Unlock()
				if done {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != 40 {
		t.Fatalf("consumed %d distinct of 40", len(seen))
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("%s consumed %d times", v, n)
		}
	}
	if len(parts[sa]) != 2 || len(parts[sb]) != 2 {
		t.Fatalf("partitions consumed: %v and %v", parts[sa], parts[sb])
	}
	// Each instance's members are visible in the group.
	g, err := a.describeGroupMembers(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	if g != 2 {
		t.Fatalf("group members: %d, want 2", g)
	}

	// Offsets set through one instance for partitions the other holds
	// would not last (the other goes on from its own position): refused,
	// and nothing changes.
	for p, end := range ends {
		waitCommitted(t, group, topic, p, end, "")
	}
	ownA, ownB := a.owned(group, topic), b.owned(group, topic)
	_, err = a.ResetOffsets(context.Background(), "", group, topic, time.Time{}, "earliest")
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), fmt.Sprint(ownB)) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("resetting every partition through one instance: %v, want FAILED_PRECONDITION naming %v", err, ownB)
	}
	for p, end := range ends {
		if at, _ := committed(t, group, topic, p); at != end {
			t.Fatalf("after the refused reset partition %d is committed at %d, want %d", p, at, end)
		}
	}
	noMore(t, sa, 300*time.Millisecond)
	// Its own partitions it sets, and delivers their records again.
	var targets []OffsetTarget
	var again int
	for _, p := range ownA {
		targets = append(targets, OffsetTarget{Partition: p})
		again += int(ends[p])
	}
	if _, err := a.SetOffsets(context.Background(), "", group, topic, targets); err != nil {
		t.Fatalf("setting the partitions %v one instance holds: %v", ownA, err)
	}
	for _, m := range take(t, sa, again, 10*time.Second) {
		if !slices.Contains(ownA, m.Partition) {
			t.Fatalf("after rewinding %v, partition %d delivered again", ownA, m.Partition)
		}
	}
	for _, p := range ownB {
		if at, _ := committed(t, group, topic, p); at != ends[p] {
			t.Fatalf("partition %d of the other instance is committed at %d, want %d", p, at, ends[p])
		}
	}
	sa.Close(true)
	sb.Close(true)
}

// owned lists the partitions this instance's member owns, ascending.
func (s *Service) owned(group, topic string) []int32 {
	s.mu.Lock()
	m := s.members[memberKey{testClusterName, group, topic}]
	s.mu.Unlock()
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.order) // kept sorted
}

// ownedPartitions is owned as text: "[0 1]", "[]" when it owns none.
func (s *Service) ownedPartitions(group, topic string) string {
	return fmt.Sprint(s.owned(group, topic))
}

// describeGroupMembers counts the group's members.
func (s *Service) describeGroupMembers(ctx context.Context, group string) (int, error) {
	adm, _, err := s.admin("")
	if err != nil {
		return 0, err
	}
	gs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return 0, err
	}
	return len(gs[group].Members), nil
}

func TestEngineSetOffsetsOnLiveGroup(t *testing.T) {
	s := startEngine(t, engineConfig())
	topic := kit.Topic(t, 1, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 10, 0)
	ss, err := s.Open(context.Background(), "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range take(t, ss, 10, 20*time.Second) {
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	waitCommitted(t, group, topic, 0, 10, "")
	// Rewind the live member to 4 with 5 acknowledged: it delivers 4, 6,
	// 7, 8, 9 again, and commits 4 with [5,6) as sparse acks.
	meta := sparseacks.Encode(4, []sparseacks.Range{{From: 5, To: 6}})
	if _, err := s.SetOffsets(context.Background(), "", group, topic, []OffsetTarget{{Partition: 0, Offset: 4, Metadata: meta}}); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, group, topic, 0, 4, meta)
	var offsets []int64
	for _, m := range take(t, ss, 5, 10*time.Second) {
		offsets = append(offsets, m.Offset)
	}
	if fmt.Sprint(offsets) != "[4 6 7 8 9]" {
		t.Fatalf("after rewinding delivered %v", offsets)
	}
	// Rewound to 2: an ack still in flight for offset 8 of the old
	// position is refused as stale (FAILED_PRECONDITION, which streams
	// skip), not as never delivered.
	if _, err := s.SetOffsets(context.Background(), "", group, topic, []OffsetTarget{{Partition: 0, Offset: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := ss.Ack(0, 8); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale ack after rewind: %v", err)
	}
	if err := ss.Ack(0, 20); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ack of offset 20: %v", err)
	}
	take(t, ss, 8, 10*time.Second)
	// Reset to the end by position, then to a time before everything.
	if _, err := s.ResetOffsets(context.Background(), "", group, topic, time.Time{}, "latest"); err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, group, topic, 0, 10, "")
	noMore(t, ss, 300*time.Millisecond)
	if _, err := s.ResetOffsets(context.Background(), "", group, topic, time.Now().Add(-time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	if got := take(t, ss, 10, 10*time.Second); got[0].Offset != 0 {
		t.Fatalf("after reset to a time: first offset %d", got[0].Offset)
	}
	// Bad targets.
	if _, err := s.SetOffsets(context.Background(), "", group, topic, []OffsetTarget{{Partition: 3, Offset: 1}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("partition 3: %v", err)
	}
	if _, err := s.SetOffsets(context.Background(), "", group, "no-such-topic-"+group, []OffsetTarget{{Partition: 0, Offset: 1}}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown topic: %v", err)
	}
	ss.Close(true)
}
