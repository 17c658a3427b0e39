package kafkaapi

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPartitionLag: a partition's lag is its high watermark less its first
// offset not acknowledged; acknowledgements beyond that offset leave it.
func TestPartitionLag(t *testing.T) {
	ps := newPartState("t", 0)
	if got := ps.lag(); got != 0 {
		t.Fatalf("lag before any fetch = %d, want 0", got)
	}
	if err := ps.startAt(0, ""); err != nil {
		t.Fatal(err)
	}
	for off := range int64(5) {
		ps.add(&kgo.Record{Offset: off})
	}
	ps.highWatermark = 7 // two records not read yet
	for _, step := range []struct {
		settle int64
		want   int64
	}{{-1, 7}, {2, 7}, {0, 6}, {1, 4}, {3, 3}, {4, 2}} {
		if step.settle >= 0 {
			ps.settle(step.settle)
		}
		if got := ps.lag(); got != step.want {
			t.Errorf("lag after settling %d = %d, want %d", step.settle, got, step.want)
		}
	}
}
