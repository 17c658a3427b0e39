package kafkaapi

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestEngineMaxGroupMembers: beyond max_group_members a new group is
// RESOURCE_EXHAUSTED naming the key, while groups already joined go on;
// once idle members left, new groups join again.
func TestEngineMaxGroupMembers(t *testing.T) {
	cfg := engineConfig()
	cfg.Consume.MaxGroupMembers = 2
	cfg.Consume.SubscriptionTimeout = 500 * time.Millisecond
	s := startEngine(t, cfg)
	ctx := testContext(t)
	topic := kit.Topic(t, 1, nil)
	a, b, c := testkit.Name(t, "a"), testkit.Name(t, "b"), testkit.Name(t, "c")
	for _, g := range []string{a, b} {
		ss, err := s.Open(ctx, "", g, topic)
		if err != nil {
			t.Fatal(err)
		}
		ss.Close(true)
	}
	_, err := s.Open(ctx, "", c, topic)
	wantCode(t, "a third group", err, codes.ResourceExhausted, "max_group_members", c)
	// A group already joined is no new member.
	ss, err := s.Open(ctx, "", a, topic)
	if err != nil {
		t.Fatalf("a group already joined: %v", err)
	}
	ss.Close(true)
	// Idle members leave after the subscription timeout, making room.
	eventually(t, 30*time.Second, func() error {
		ss, err := s.Open(ctx, "", c, topic)
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("a third group once others were idle: %v", err)
			}
			return err
		}
		ss.Close(true)
		return nil
	})
}
