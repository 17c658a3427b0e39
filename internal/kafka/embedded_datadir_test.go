package kafka_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ferryproxy/ferry/internal/kafka"
)

// TestEmbeddedDataDirInUse: a second broker on the data directory of a
// running one is refused, and may start once the first stopped.
func TestEmbeddedDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := kafka.StartEmbedded(0, 1, kafka.EmbeddedDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kafka.StartEmbedded(0, 1, kafka.EmbeddedDataDir(dir)); err == nil || !strings.Contains(err.Error(), "in use by another Ferry") {
		t.Fatalf("second broker on %s: %v, want in use", dir, err)
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := kafka.StartEmbedded(0, 1, kafka.EmbeddedDataDir(dir))
	if err != nil {
		t.Fatalf("starting again once the first stopped: %v", err)
	}
	if err := again.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
