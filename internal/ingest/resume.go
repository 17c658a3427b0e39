package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// position is where a source's call opens: the cursor that goes into the
// request (none: the configured request) and the sequence number of the
// record it belongs to.
type position struct {
	cursor []byte
	seq    int64
	// found is set when the cursor was read from the topic.
	found bool
}

// latest is the newest record of a source found in a partition.
type latest struct {
	gen            int64
	seq            int64
	cursor, resume []byte
}

func (l *latest) newer(o *latest) bool {
	return o == nil || l.gen > o.gen || l.gen == o.gen && l.seq > o.seq
}

// resumeIdle is how long reading a stretch of a partition waits for more
// records before it takes the stretch as read.
const resumeIdle = 5 * time.Second

// resume finds where the source stopped: the newest of its records in its
// topic, read back from the end of every partition. With one partition,
// every record before the newest is in the topic too (the idempotent
// producer keeps a partition's order), so the call resumes from the
// newest record's own cursor and nothing is written twice. With more, the
// records of the last moments may have reached some partitions and not
// others, so it resumes from the cursor the newest record carries in
// ferry-resume, up to which everything was acknowledged: the records in
// flight then may be written twice, never skipped.
func (s *source) resume(ctx context.Context) (position, error) {
	topic := s.plan.cfg.Topic
	adm, err := s.cluster.Admin()
	if err != nil {
		return position{}, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return position{}, fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return position{}, nil // nothing written yet
		}
		return position{}, fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return position{}, fmt.Errorf("listing the start offsets of %s: %w", topic, err)
	}
	var best *latest
	partitions := 0
	for p, end := range ends[topic] {
		partitions++
		start, _ := starts.Lookup(topic, p)
		l, err := s.latestIn(ctx, p, start.Offset, end.Offset)
		if err != nil {
			return position{}, err
		}
		if l != nil && l.newer(best) {
			best = l
		}
	}
	if best == nil {
		return position{}, nil
	}
	pos := position{cursor: best.resume, seq: best.seq, found: true}
	if partitions == 1 {
		pos.cursor = best.cursor
	}
	return pos, nil
}

// latestIn returns the newest record of the source in partition p, whose
// records run from start to end, reading back from the end in stretches
// that double in length; nil when it has none.
func (s *source) latestIn(ctx context.Context, p int32, start, end int64) (*latest, error) {
	stretch := int64(max(4*s.plan.cfg.MaxInFlight, 256))
	for hi := end; hi > start; stretch *= 2 {
		lo := max(start, hi-stretch)
		l, err := s.read(ctx, p, lo, hi)
		if err != nil || l != nil {
			return l, err
		}
		hi = lo
	}
	return nil, nil
}

// read returns the newest record of the source among the offsets lo to hi
// (excluded) of partition p.
func (s *source) read(ctx context.Context, p int32, lo, hi int64) (*latest, error) {
	topic, name := s.plan.cfg.Topic, []byte(s.plan.cfg.Name)
	cl, err := s.cluster.NewPartitionReader(topic, map[int32]int64{p: lo}, 250*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var found *latest
	for next := lo; next < hi; {
		// Offsets past the last record returned (transaction markers,
		// compacted records) are never returned: a read that brings
		// nothing for a while has reached the end. Stopping early is safe:
		// an older record resumes earlier, writing records twice rather
		// than skipping any.
		pctx, cancel := context.WithTimeout(ctx, resumeIdle)
		fs := cl.PollFetches(pctx)
		idle := pctx.Err() != nil && fs.NumRecords() == 0
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if idle {
			break
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = err
			}
		})
		if ferr != nil {
			return nil, fmt.Errorf("reading partition %d of %s from offset %d to %d: %w", p, topic, lo, hi, ferr)
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, r := range fp.Records {
				next = r.Offset + 1
				if r.Offset >= hi {
					continue
				}
				// Newest by generation, then count, not by offset: an
				// instance that lost the source may still write the
				// records it had in flight after the new owner's.
				if l := parseLatest(r, name); l != nil && l.newer(found) {
					found = l
				}
			}
			if fp.HighWatermark <= next {
				next = max(next, hi)
			}
		})
	}
	return found, nil
}

// parseLatest reads the resume headers of r when it is a record of the
// source named name; nil otherwise.
func parseLatest(r *kgo.Record, name []byte) *latest {
	var l latest
	var src, seq bool
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderSource:
			src = bytes.Equal(h.Value, name)
		case HeaderSeq:
			g, n, ok := bytes.Cut(h.Value, []byte{'-'})
			if !ok {
				return nil
			}
			var err1, err2 error
			l.gen, err1 = strconv.ParseInt(string(g), 10, 64)
			l.seq, err2 = strconv.ParseInt(string(n), 10, 64)
			seq = err1 == nil && err2 == nil
		case HeaderCursor:
			l.cursor = h.Value
		case HeaderResume:
			l.resume = h.Value
		}
	}
	if !src || !seq {
		return nil
	}
	return &l
}
