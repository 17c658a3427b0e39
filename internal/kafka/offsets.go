package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Position says which offset of each partition ListOffsets lists: the
// start of the log (AtStart), its end (AtEnd), or the first record at or
// after a time (AtOrAfter). The zero Position is AtOrAfter the Unix epoch.
type Position struct {
	// ts is Kafka's ListOffsets timestamp: -2 for the start, -1 for the
	// end, a Unix millisecond otherwise.
	ts int64
}

// AtStart is each partition's log start offset: its oldest record still
// kept.
func AtStart() Position { return Position{ts: -2} }

// AtEnd is each partition's end offset (the high watermark): the offset
// the next record written gets.
func AtEnd() Position { return Position{ts: -1} }

// AtOrAfter is, in each partition, the offset of the first record whose
// timestamp is at or after t, or the partition's end offset when it has
// no such record. A time before 1970 is the start.
func AtOrAfter(t time.Time) Position { return Position{ts: max(t.UnixMilli(), 0)} }

// String says which offset p is, for logs and errors.
func (p Position) String() string {
	switch p.ts {
	case -2:
		return "start"
	case -1:
		return "end"
	default:
		return "at or after " + time.UnixMilli(p.ts).UTC().Format(time.RFC3339Nano)
	}
}

// ListOffsets returns the offset at position at of every partition of
// topic, asked through the cluster's admin client (see Admin).
//
// A topic that does not exist fails with an error that matches
// kerr.UnknownTopicOrPartition (errors.Is). A partition may be missing from
// the answer: the listing reads the topic's metadata of its own, which may
// differ from what the caller read before (a topic just created or
// recreated), so a caller looking up partitions it knows must check. The
// error is franz-go's or the broker's as it came: the caller says what it
// was doing (see Wrap).
func (c *Cluster) ListOffsets(ctx context.Context, topic string, at Position) (map[int32]int64, error) {
	cl, err := c.adminClient()
	if err != nil {
		return nil, err
	}
	return ListOffsetsWith(ctx, cl, topic, at)
}

// ListOffsetsWith is ListOffsets asked through cl, a client of a cluster
// that already has one open (a reader listing its own topic, say).
func ListOffsetsWith(ctx context.Context, cl *kgo.Client, topic string, at Position) (map[int32]int64, error) {
	adm := kadm.NewClient(cl)
	var (
		listed kadm.ListedOffsets
		err    error
	)
	switch at.ts {
	case -2:
		listed, err = adm.ListStartOffsets(ctx, topic)
	case -1:
		listed, err = adm.ListEndOffsets(ctx, topic)
	default:
		// kadm lists a partition's end offset when it has no record at
		// or after the time, where Kafka answers -1.
		listed, err = adm.ListOffsetsAfterMilli(ctx, at.ts, topic)
	}
	if err == nil {
		// The first failed partition's error; a topic that does not
		// exist is listed as partition -1 with UNKNOWN_TOPIC_OR_PARTITION.
		err = listed.Error()
	}
	if err != nil {
		return nil, err
	}
	offsets := make(map[int32]int64, len(listed[topic]))
	for p, o := range listed[topic] {
		offsets[p] = o.Offset
	}
	return offsets, nil
}

// Watermark is a partition's log start offset and its end offset.
type Watermark struct {
	Start, End int64
}

// Watermarks returns the start and end offset of every partition of
// topic, listed as ListOffsets does; a partition missing from either
// listing is missing from the answer, so a caller looking up partitions it
// knows must check.
func (c *Cluster) Watermarks(ctx context.Context, topic string) (map[int32]Watermark, error) {
	starts, err := c.ListOffsets(ctx, topic, AtStart())
	if err != nil {
		return nil, err
	}
	ends, err := c.ListOffsets(ctx, topic, AtEnd())
	if err != nil {
		return nil, err
	}
	marks := make(map[int32]Watermark, len(starts))
	for p, start := range starts {
		if end, ok := ends[p]; ok {
			marks[p] = Watermark{Start: start, End: end}
		}
	}
	return marks, nil
}
