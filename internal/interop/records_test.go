package interop_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

// part is which records of a call a difference concerns.
type part int

const (
	requests part = 1 << iota
	replies
	both = requests | replies
)

// knownDifferences are every way Ferry's records may differ from Zilla's
// for the same call, each with its reason; each rewrites one side's
// records of a call (in order) so that what is left must be identical.
// They run in this order.
var knownDifferences = []struct {
	what, why string
	part      part
	// ferry and zilla rewrite that side's records; nil leaves them.
	ferry, zilla func(call string, recs []*kgo.Record) []*kgo.Record
}{
	{
		what: "grpc-timeout",
		why:  "Zilla forwards the client's grpc-timeout as meta:grpc-timeout; Ferry forwards no grpc-* transport header but grpc-accept-encoding (deliberate: the deadline is the call's, not the back end's)",
		part: requests,
		zilla: func(_ string, recs []*kgo.Record) []*kgo.Record {
			for _, r := range recs {
				r.Headers = without(r.Headers, "meta:grpc-timeout")
			}
			return recs
		},
	},
	{
		what:  "order of meta: headers",
		why:   "Zilla keeps the order the metadata arrived in, the caller's on requests and the server's on replies; Ferry sorts the keys (deliberate: grpc-go hands metadata over as a map, so the arrival order is gone before Ferry sees it, and sorted keys make a call's records the same every time)",
		part:  both,
		ferry: sortMeta,
		zilla: sortMeta,
	},
	{
		what:  "a metadata key with several values",
		why:   "Zilla joins the values into one header \"v1, v2\"; Ferry writes one header per value (deliberate: a value may itself hold \", \")",
		part:  requests,
		ferry: joinRepeated,
	},
	{
		what: "trailers on the final reply record",
		why:  "Ferry's back end writes the server's trailer metadata (x-trailer) as meta: headers on the final reply record; Zilla's writes only the correlation id and status there",
		part: replies,
		ferry: func(_ string, recs []*kgo.Record) []*kgo.Record {
			return editLast(recs, func(r *kgo.Record) { r.Headers = without(r.Headers, "meta:x-trailer") })
		},
	},
	{
		what: "a call the server fails",
		why:  "Zilla's back end writes no reply at all when the server answers an error; Ferry's writes the final record with zilla:status and zilla:message",
		part: replies,
		ferry: func(call string, recs []*kgo.Record) []*kgo.Record {
			if call == "Error" {
				return nil
			}
			return recs
		},
	},
}

// TestRecords: the same calls made through Zilla's front end (answered by
// Ferry's back end) and Ferry's front end (answered by Zilla's back end);
// the request records each front end writes and the reply records each
// back end writes are compared header by header and value byte by byte.
// Only the idempotency key (chosen per side), the correlation id made
// from it and the reply topic differ by construction: the test checks
// each side's correlation id against the layout's algorithm and then
// reads past them. Every other difference is in knownDifferences.
//
// Ferry writes meta:grpc-accept-encoding as Zilla does, and the response
// header metadata on the final reply record only when no reply record
// carried it, so those are no differences.
func TestRecords(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := fmt.Sprint(time.Now().UnixNano())
	bin := string([]byte{0, 1, 2, 0xfe, 0xff})
	calls := []struct {
		name, method string
		reqs         []string
	}{
		{"Unary", "UnaryEcho", []string{"u"}},
		{"ServerStreaming", "ServerStreamingEcho", []string{"s"}},
		{"ClientStreaming", "ClientStreamingEcho", []string{"a", "b", "c"}},
		{"Bidi", "BidirectionalStreamingEcho", []string{"x", "y"}},
		{"Error", "UnaryEcho", []string{"fail-records"}},
	}
	key := func(s, call string) string { return fmt.Sprintf("%s-%s-%s", s, strings.ToLower(call), run) }
	// Zilla's front end mixes up the metadata of concurrent calls on one
	// connection (a call's record carried another's idempotency-key), so
	// the calls run one after the other; Ferry's Error call waits for its
	// route timeout meanwhile.
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, c := range calls {
		for _, sd := range []string{"zilla", "ferry"} {
			cc := s.zillaCC
			if sd == "ferry" {
				cc = s.ferryCC
			}
			md := metadata.Pairs("idempotency-key", key(sd, c.name), "x-trace", "t1", "x-multi", "one", "x-multi", "two", "x-echo-bin", bin)
			do := func() {
				res := call(ctx, cc, c.method, md, c.reqs...)
				if c.name != "Error" && res.err != nil {
					t.Errorf("%s through %s: %v", c.name, sd, res.err)
				}
			}
			if sd == "ferry" && c.name == "Error" {
				wg.Add(1)
				go func() { defer wg.Done(); do() }()
				continue
			}
			do()
		}
	}
	wg.Wait()

	recs := readAll(t, s.brokers, s.topics.zreq, s.topics.zrep, s.topics.freq, s.topics.frep)
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			// Requests: Zilla's front end writes zreq, Ferry's freq.
			// Replies: Ferry's back end answers Zilla's front end on zrep,
			// Zilla's back end answers Ferry's on frep.
			zreq := normalize(t, recs[s.topics.zreq], key("zilla", c.name), c.method, s.topics.zrep)
			freq := normalize(t, recs[s.topics.freq], key("ferry", c.name), c.method, s.topics.frep)
			zrep := normalize(t, recs[s.topics.zrep], key("zilla", c.name), c.method, s.topics.zrep)
			frep := normalize(t, recs[s.topics.frep], key("ferry", c.name), c.method, s.topics.frep)
			for _, p := range []struct {
				part         part
				name         string
				zilla, ferry []*kgo.Record
			}{
				{requests, "requests", zreq, freq},
				{replies, "replies", frep, zrep},
			} {
				zilla, ferry := p.zilla, p.ferry
				for _, d := range knownDifferences {
					if d.part&p.part == 0 {
						continue
					}
					if d.ferry != nil {
						ferry = d.ferry(c.name, ferry)
					}
					if d.zilla != nil {
						zilla = d.zilla(c.name, zilla)
					}
				}
				if got, want := fmtRecords(ferry), fmtRecords(zilla); got != want {
					t.Errorf("%s differ beyond the known differences:\nFerry's:%s\nZilla's:%s", p.name, got, want)
				}
			}
		})
	}
}

// correlationID is the layout's correlation id of a call with an
// idempotency key on the echo service.
func correlationID(key, method, replyTo string) string {
	sum := md5.Sum([]byte("zilla:service" + "grpc.examples.echo.Echo" + "zilla:method" + method + "zilla:reply-to" + replyTo))
	return key + "-" + hex.EncodeToString(sum[:])
}

// normalize returns the records of the call with idempotency key key,
// copied, after checking its correlation id, with the key, the
// correlation id and the reply topic replaced by placeholders.
func normalize(t *testing.T, all []*kgo.Record, key, method, replyTo string) []*kgo.Record {
	t.Helper()
	id := correlationID(key, method, replyTo)
	var out []*kgo.Record
	for _, r := range all {
		if !strings.HasPrefix(string(r.Key), key+"-") {
			continue
		}
		if string(r.Key) != id {
			t.Errorf("record key %q, want the correlation id %q", r.Key, id)
		}
		c := &kgo.Record{Key: []byte("<id>"), Value: r.Value}
		for _, h := range r.Headers {
			v := string(h.Value)
			switch {
			case h.Key == "zilla:correlation-id" && v == id:
				v = "<id>"
			case h.Key == "zilla:reply-to" && v == replyTo:
				v = "<reply-to>"
			case h.Key == "meta:idempotency-key" && v == key:
				v = "<key>"
			}
			c.Headers = append(c.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(v)})
		}
		out = append(out, c)
	}
	if len(out) == 0 && !strings.Contains(key, "error") {
		t.Errorf("no record of the call with idempotency key %s", key)
	}
	return out
}

// metaBlock returns the bounds of the meta: headers of hs, which the
// layout writes last.
func metaBlock(hs []kgo.RecordHeader) int {
	for i, h := range hs {
		if strings.HasPrefix(h.Key, "meta:") {
			return i
		}
	}
	return len(hs)
}

func sortMeta(_ string, recs []*kgo.Record) []*kgo.Record {
	for _, r := range recs {
		m := r.Headers[metaBlock(r.Headers):]
		sort.SliceStable(m, func(i, j int) bool { return m[i].Key < m[j].Key })
	}
	return recs
}

func joinRepeated(_ string, recs []*kgo.Record) []*kgo.Record {
	for _, r := range recs {
		var hs []kgo.RecordHeader
		for i, h := range r.Headers {
			if i >= metaBlock(r.Headers) && len(hs) > 0 && hs[len(hs)-1].Key == h.Key {
				last := &hs[len(hs)-1]
				last.Value = append(append(last.Value[:len(last.Value):len(last.Value)], ", "...), h.Value...)
				continue
			}
			hs = append(hs, h)
		}
		r.Headers = hs
	}
	return recs
}

func editLast(recs []*kgo.Record, f func(*kgo.Record)) []*kgo.Record {
	if len(recs) > 0 && recs[len(recs)-1].Value == nil {
		f(recs[len(recs)-1])
	}
	return recs
}

func without(hs []kgo.RecordHeader, key string) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for _, h := range hs {
		if h.Key != key {
			out = append(out, h)
		}
	}
	return out
}

func fmtRecords(recs []*kgo.Record) string {
	var b strings.Builder
	for i, r := range recs {
		fmt.Fprintf(&b, "\n  record %d key=%q value=", i, r.Key)
		if r.Value == nil {
			b.WriteString("null")
		} else {
			fmt.Fprintf(&b, "%x", r.Value)
		}
		for _, h := range r.Headers {
			fmt.Fprintf(&b, "\n    %s=%q", h.Key, h.Value)
		}
	}
	return b.String()
}

// readAll reads every record of the topics up to their current end.
func readAll(t *testing.T, brokers []string, topics ...string) map[string][]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Topic] += o.Offset })
	out := map[string][]*kgo.Record{}
	n := func() (got, total int64) {
		for _, tp := range topics {
			got += int64(len(out[tp]))
			total += want[tp]
		}
		return got, total
	}
	for got, total := n(); got < total; got, total = n() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records before the deadline", got, total)
		}
		fs.EachRecord(func(r *kgo.Record) { out[r.Topic] = append(out[r.Topic], r) })
	}
	return out
}
