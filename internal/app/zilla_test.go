package app_test

import (
	"context"
	"reflect"
	"sort"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

// produceTo writes one record per message to the given partition of topic.
func produceTo(t testing.TB, cl *kgo.Client, topic string, partition int32, ms ...string) {
	t.Helper()
	var recs []*kgo.Record
	for _, m := range ms {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: partition, Value: echo(m)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestFetchResumeZillaID: a client holding a message id as Zilla writes it
// — offset -2 ("earliest") for each partition that had delivered nothing
// yet — resumes on Ferry with exactly the records it had not seen, those
// partitions from their log start; -1 ("latest") resumes a partition at
// its end when the caller resumes.
func TestFetchResumeZillaID(t *testing.T) {
	kit.CheckLeaks(t)
	topic := kit.Topic(t, 3, nil)
	prod := kit.Client(t, kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	cc := dial(t, startFerry(t, fetchRoute(topic, "")))

	// The client saw p0-a, the first record of partition 0, and nothing of
	// partitions 1 and 2: Zilla's id {0: 1, 1: -2, 2: -2}.
	const zillaID = "AQYAAgIDBAM" // 01 06 00 02 02 03 04 03
	produceTo(t, prod, topic, 0, "p0-a", "p0-b")
	produceTo(t, prod, topic, 1, "p1-a", "p1-b")
	produceTo(t, prod, topic, 2, "p2-a")

	t.Run("earliest", func(t *testing.T) {
		sub := subscribe(t, cc, metadata.Pairs("last-message-id", zillaID))
		defer sub.cancel()
		got := msgs(sub.take(t, 4))
		produceTo(t, prod, topic, 1, "p1-c")
		got = append(got, msgs(sub.take(t, 1))...)
		sort.Strings(got)
		if want := []string{"p0-b", "p1-a", "p1-b", "p1-c", "p2-a"}; !reflect.DeepEqual(got, want) {
			t.Errorf("resumed with %s: %q, want %q", zillaID, got, want)
		}
	})

	t.Run("latest", func(t *testing.T) {
		// {0: 2, 1: -2, 2: -1}: partition 2 resumes at its end, past p2-a.
		id := "AQYABAIDBAE"
		sub := subscribe(t, cc, metadata.Pairs("last-message-id", id))
		defer sub.cancel()
		got := msgs(sub.take(t, 3))
		sort.Strings(got)
		if want := []string{"p1-a", "p1-b", "p1-c"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("resumed with %s: %q, want %q", id, got, want)
		}
		// The end was listed before the first message came, so a record
		// written now is after it.
		produceTo(t, prod, topic, 2, "p2-b")
		if got := msgs(sub.take(t, 1)); got[0] != "p2-b" {
			t.Errorf("then %q, want p2-b", got[0])
		}
	})
}
