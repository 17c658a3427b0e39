package offsets

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPendingMatchesModel drives Pending and a plain sorted slice with the
// same random adds and finishes, across compactions.
func TestPendingMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var p Pending
	var model, finished []int64
	next := int64(0)
	for step := 0; step < 200_000; step++ {
		if r.IntN(3) > 0 || len(model) == 0 {
			next += int64(1 + r.IntN(3)/2) // runs, and gaps as compaction leaves them
			p.Add(next)
			model = append(model, next)
		} else {
			// Mostly the oldest, sometimes any, sometimes one not there.
			// Or one finished before, maybe not compacted away yet.
			var off int64
			switch r.IntN(5) {
			case 0, 1:
				off = model[0]
			case 2:
				off = model[r.IntN(len(model))]
			case 3:
				off = next + 1
			default:
				if len(finished) > 0 {
					off = finished[len(finished)-1-r.IntN(min(len(finished), 50))]
				}
			}
			i, found := slices.BinarySearch(model, off)
			if got := p.Finish(off); got != found {
				t.Fatalf("step %d: Finish(%d) = %v, want %v", step, off, got, found)
			}
			if found {
				model = slices.Delete(model, i, i+1)
				finished = append(finished, off)
			}
		}
		if p.Len() != len(model) {
			t.Fatalf("step %d: Len %d, want %d", step, p.Len(), len(model))
		}
		if f, ok := p.First(); ok != (len(model) > 0) || (ok && f != model[0]) {
			t.Fatalf("step %d: First %d %v, want %v", step, f, ok, model[:min(1, len(model))])
		}
	}
	var all []int64
	p.Each(func(off int64) { all = append(all, off) })
	if !slices.Equal(all, model) {
		t.Fatalf("Each: %d offsets, want %d", len(all), len(model))
	}
}

// TestPendingCommitPoint: the commit point is the first unfinished offset,
// whatever order offsets finish in, and the end once all are finished.
func TestPendingCommitPoint(t *testing.T) {
	var p Pending
	if got := p.CommitPoint(7); got != 7 {
		t.Errorf("empty: CommitPoint(7) = %d", got)
	}
	for _, o := range []int64{10, 11, 12, 14, 15} { // 13 compacted away
		p.Add(o)
	}
	steps := []struct {
		finish int64
		want   int64
	}{
		{12, 10}, {15, 10}, {10, 11}, {11, 14}, {14, 16},
	}
	for _, s := range steps {
		if !p.Finish(s.finish) {
			t.Fatalf("Finish(%d) found nothing", s.finish)
		}
		if got := p.CommitPoint(16); got != s.want {
			t.Errorf("after finishing %d: CommitPoint = %d, want %d", s.finish, got, s.want)
		}
	}
	if p.Finish(12) || p.Contains(12) {
		t.Error("a finished offset was found again")
	}
	p.Add(20)
	p.Reset()
	if p.Len() != 0 || p.CommitPoint(3) != 3 {
		t.Error("Reset left offsets behind")
	}
}

// BenchmarkPendingFinishAnyOrder adds 10,000 offsets and finishes them in
// random order: each finish stays cheap however deep the set is.
//
//	go test -run '^$' -bench . ./internal/offsets
func BenchmarkPendingFinishAnyOrder(b *testing.B) {
	const depth = 10_000
	order := rand.New(rand.NewPCG(3, 4)).Perm(depth)
	b.ReportAllocs()
	for b.Loop() {
		var p Pending
		for o := range depth {
			p.Add(int64(o))
		}
		for _, o := range order {
			p.Finish(int64(o))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*depth), "ns/finish")
}

// BenchmarkPendingFinishNewestFirst adds 10,000 offsets and finishes them
// newest first, so the commit point stays put until the very last finish:
// a tracker that shifted its slice on every finish would copy the whole
// set each time.
//
//	go test -run '^$' -bench . ./internal/offsets
func BenchmarkPendingFinishNewestFirst(b *testing.B) {
	const depth = 10_000
	b.ReportAllocs()
	for b.Loop() {
		var p Pending
		for o := range depth {
			p.Add(int64(o))
		}
		for o := depth - 1; o >= 0; o-- {
			p.Finish(int64(o))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*depth), "ns/finish")
}
