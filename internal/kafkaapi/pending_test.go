package kafkaapi

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPendingMatchesModel drives pending and a plain sorted slice with the
// same random adds and removes, across compactions.
func TestPendingMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var p pending
	var model, removed []int64
	next := int64(0)
	for step := 0; step < 200_000; step++ {
		if r.IntN(3) > 0 || len(model) == 0 {
			next += int64(1 + r.IntN(3)/2) // runs, and gaps as compaction leaves them
			p.add(next)
			model = append(model, next)
		} else {
			// Mostly the oldest, sometimes any, sometimes one not there.
			// Or one removed before, settled but maybe not compacted yet.
			var off int64
			switch r.IntN(5) {
			case 0, 1:
				off = model[0]
			case 2:
				off = model[r.IntN(len(model))]
			case 3:
				off = next + 1
			default:
				if len(removed) > 0 {
					off = removed[len(removed)-1-r.IntN(min(len(removed), 50))]
				}
			}
			i, found := slices.BinarySearch(model, off)
			if got := p.remove(off); got != found {
				t.Fatalf("step %d: remove(%d) = %v, want %v", step, off, got, found)
			}
			if found {
				model = slices.Delete(model, i, i+1)
				removed = append(removed, off)
			}
		}
		if p.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, p.len(), len(model))
		}
		if f, ok := p.first(); ok != (len(model) > 0) || (ok && f != model[0]) {
			t.Fatalf("step %d: first %d %v, want %v", step, f, ok, model[:min(1, len(model))])
		}
	}
	var all []int64
	p.each(func(off int64) { all = append(all, off) })
	if !slices.Equal(all, model) {
		t.Fatalf("each: %d offsets, want %d", len(all), len(model))
	}
}
