package kafkaapi

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ferryproxy/ferry/internal/testkit"
)

// TestEngineSetOffsetsOutOfRange: an offset past a partition's end (or
// before its start) is INVALID_ARGUMENT naming partition, offset and the
// valid range, and changes nothing: the member goes on delivering, new
// records included. The end itself is allowed.
func TestEngineSetOffsetsOutOfRange(t *testing.T) {
	s := startEngine(t, engineConfig())
	ctx := testContext(t)
	topic := kit.Topic(t, 2, nil)
	group := testkit.Name(t, "group")
	produceN(t, s, topic, 5, 0)

	// No member yet: committed directly, so checked before that too.
	_, err := s.SetOffsets(ctx, "", group, topic, []OffsetTarget{{Partition: 0, Offset: 1000}})
	wantCode(t, "SetOffsets past the end", err, codes.InvalidArgument, "offset 1000 of partition 0 is outside 0 to 5", topic)

	ss, err := s.Open(ctx, "", group, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close(true)
	for _, m := range take(t, ss, 5, 30*time.Second) {
		if err := ss.Ack(m.Partition, m.Offset); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.SetOffsets(ctx, "", group, topic, []OffsetTarget{{Partition: 1, Offset: 0}, {Partition: 0, Offset: 6}})
	wantCode(t, "SetOffsets one past the end", err, codes.InvalidArgument, "offset 6 of partition 0 is outside 0 to 5")
	// The end is the next record: allowed.
	if _, err := s.SetOffsets(ctx, "", group, topic, []OffsetTarget{{Partition: 0, Offset: 5}}); err != nil {
		t.Fatal(err)
	}
	produceN(t, s, topic, 1, 0)
	if m := take(t, ss, 1, 30*time.Second)[0]; m.Partition != 0 || m.Offset != 5 {
		t.Fatalf("after the refused SetOffsets got partition %d offset %d, want the new record at 0/5", m.Partition, m.Offset)
	}
}
