package kafka

import (
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFetchErrorAttrs: a client's own error (a failed group session, a
// closed client) is logged without the topic "" and partition 0 or -1
// franz-go files it under; a whole topic's error without a partition.
func TestFetchErrorAttrs(t *testing.T) {
	errDial := errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")
	fs := append(kgo.NewErrFetch(errDial), kgo.Fetch{Topics: []kgo.FetchTopic{
		{Topic: "", Partitions: []kgo.FetchPartition{{Partition: 0, Err: &kgo.ErrGroupSession{Err: errDial}}}},
		{Topic: "t", Partitions: []kgo.FetchPartition{{Partition: -1, Err: errDial}, {Partition: 3, Err: errDial}}},
	}})
	var got []string
	fs.EachError(func(topic string, p int32, _ error) {
		got = append(got, fmt.Sprint(FetchErrorAttrs(topic, p)))
	})
	want := []string{"[]", "[]", "[topic t]", "[topic t partition 3]"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("attributes = %q, want %q", got, want)
	}
}
