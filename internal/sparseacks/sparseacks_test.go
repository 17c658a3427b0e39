package sparseacks

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestSpecExample(t *testing.T) {
	ranges := []Range{{1, 2}, {3, 4}}
	if got := Encode(0, ranges); got != "BBBB" {
		t.Errorf("Encode(0, %v) = %q, want %q", ranges, got, "BBBB")
	}
	got, err := Decode(0, "BBBB")
	if err != nil {
		t.Fatalf("Decode(0, %q): %v", "BBBB", err)
	}
	if !reflect.DeepEqual(got, ranges) {
		t.Errorf("Decode(0, %q) = %v, want %v", "BBBB", got, ranges)
	}
	if h := Human(got); h != "1-2,3-4" {
		t.Errorf("Human(%v) = %q, want %q", got, h, "1-2,3-4")
	}
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		base   int64
		ranges []Range
		want   string
	}{
		{"none", 0, nil, ""},
		{"only empty", 5, []Range{{7, 7}}, ""},
		{"relative to base", 100, []Range{{101, 102}, {103, 104}}, "BBBB"},
		{"at base", 10, []Range{{10, 12}}, "AC"},
		{"31 fits one character", 0, []Range{{31, 62}}, "ff"},
		// 32 = 0 | 1<<5: low group 0 with the continuation bit (index
		// 32, "g"), then 1 ("B").
		{"32 takes two characters", 0, []Range{{32, 33}}, "gBB"},
		{"33", 0, []Range{{33, 34}}, "hBB"},
		{"1024 takes three", 0, []Range{{1, 1025}}, "BggB"},
		{"negative base", -1, []Range{{0, 1}}, "BB"},
		{"max int64", 0, []Range{{0, math.MaxInt64}}, "A////////////H"},
		// Encode normalises what breaks its contract.
		{"unsorted", 0, []Range{{3, 4}, {1, 2}}, "BBBB"},
		{"touching merged", 0, []Range{{1, 2}, {2, 3}}, "BC"},
		{"overlapping merged", 0, []Range{{1, 5}, {2, 3}, {4, 6}}, "BF"},
		{"below base clipped", 10, []Range{{5, 8}, {9, 12}}, "AC"},
		{"empty skipped", 0, []Range{{1, 2}, {4, 4}, {5, 6}}, "BBDB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Encode(tc.base, tc.ranges)
			if got != tc.want {
				t.Fatalf("Encode(%d, %v) = %q, want %q", tc.base, tc.ranges, got, tc.want)
			}
		})
	}
}

func TestEncodeDoesNotModifyInput(t *testing.T) {
	in := []Range{{3, 4}, {1, 2}, {2, 3}}
	orig := append([]Range(nil), in...)
	Encode(0, in)
	if !reflect.DeepEqual(in, orig) {
		t.Fatalf("Encode changed its argument to %v, was %v", in, orig)
	}
}

func TestLargeOffsets(t *testing.T) {
	const big = int64(1)<<40 + 12345
	for _, tc := range []struct {
		base   int64
		ranges []Range
	}{
		{big, []Range{{big + 1, big + 2}, {big + 1<<33, big + 1<<34}}},
		{0, []Range{{big, big + 1}, {3 * big, 3*big + big}}},
		{math.MaxInt64 - 10, []Range{{math.MaxInt64 - 5, math.MaxInt64}}},
		{0, []Range{{math.MaxInt64 - 1, math.MaxInt64}}},
	} {
		s := Encode(tc.base, tc.ranges)
		got, err := Decode(tc.base, s)
		if err != nil {
			t.Fatalf("Decode(%d, %q) of %v: %v", tc.base, s, tc.ranges, err)
		}
		if !reflect.DeepEqual(got, tc.ranges) {
			t.Fatalf("Decode(%d, Encode(%v)) = %v", tc.base, tc.ranges, got)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 10000 {
		base := rng.Int64N(1 << 50)
		if i%10 == 0 {
			base = -1 // a partition without a commit
		}
		var ranges []Range
		at := base
		for range rng.IntN(20) {
			// Gaps of 1 or more keep ranges apart, as Encode would
			// merge touching ones; the first range may start at base.
			gap := rng.Int64N(1 << uint(rng.IntN(45)))
			if len(ranges) > 0 {
				gap++
			}
			from := at + gap
			to := from + 1 + rng.Int64N(1<<uint(rng.IntN(40)))
			ranges = append(ranges, Range{from, to})
			at = to
		}
		s := Encode(base, ranges)
		got, err := Decode(base, s)
		if err != nil {
			t.Fatalf("Decode(%d, %q) of %v: %v", base, s, ranges, err)
		}
		if !reflect.DeepEqual(got, ranges) {
			t.Fatalf("base %d: Decode(Encode(%v)) = %v via %q", base, ranges, got, s)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, s string
		base    int64
		want    string // in the error message
	}{
		{"invalid character", "BB!B", 0, `invalid character '!' at position 2`},
		{"padding", "BB=", 0, `invalid character '=' at position 2`},
		{"url alphabet", "B-", 0, `invalid character '-' at position 1`},
		{"non-ASCII", "Bé", 0, `invalid character 'é' at position 1`},
		{"no length", "BBB", 0, "range at position 2 has a start but no length"},
		{"cut short", "Bg", 0, "number at position 1 is cut short"},
		{"cut short start", "BBg", 0, "number at position 2 is cut short"},
		{"empty range", "BA", 0, "range at position 0 is empty"},
		{"second empty", "BBBA", 0, "range at position 2 is empty"},
		{"too many characters", "A" + strings.Repeat("/", 13) + "B", 0, "number at position 1 overflows int64"},
		{"13th character too big", "A" + strings.Repeat("/", 12) + "I", 0, "number at position 1 overflows int64"},
		{"offset beyond int64", "B" + strings.Repeat("/", 12) + "H", 0, "range at position 0 ends beyond the largest offset"},
		{"base beyond int64", "BB", math.MaxInt64 - 1, "range at position 0 ends beyond the largest offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.base, tc.s)
			if err == nil {
				t.Fatalf("Decode(%d, %q) = %v, want an error", tc.base, tc.s, got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode(%d, %q) error %q does not contain %q", tc.base, tc.s, err, tc.want)
			}
			if got != nil {
				t.Errorf("Decode(%d, %q) returned %v with its error", tc.base, tc.s, got)
			}
		})
	}
}

func TestDecodeEmpty(t *testing.T) {
	got, err := Decode(42, "")
	if got != nil || err != nil {
		t.Fatalf(`Decode(42, "") = %v, %v; want nil, nil`, got, err)
	}
}

func TestDecodeNonCanonical(t *testing.T) {
	// "gA" is 0 with a needless continuation; Kafka-Pixy reads it, and so
	// does Decode, though Encode never writes it.
	got, err := Decode(0, "gABBB")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Range{{0, 1}, {2, 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode(0, %q) = %v, want %v", "gABBB", got, want)
	}
	// A range starting at base is the committed offset itself acknowledged:
	// odd, but well-formed.
	if got, err := Decode(7, "AB"); err != nil || !reflect.DeepEqual(got, []Range{{7, 8}}) {
		t.Fatalf("Decode(7, %q) = %v, %v", "AB", got, err)
	}
}

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		ranges []Range
		want   string
	}{
		{nil, ""},
		{[]Range{{5, 9}}, "5-9"},
		{[]Range{{1, 2}, {3, 4}}, "1-2,3-4"},
		{[]Range{{1 << 41, 1<<41 + 1}}, "2199023255552-2199023255553"},
	} {
		if got := Human(tc.ranges); got != tc.want {
			t.Errorf("Human(%v) = %q, want %q", tc.ranges, got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "BBBB", "gBB", "hBBB", "A////////////H", "B////////////H", "BA", "Bg", "BB!B", "gABBB", "Bé"} {
		f.Add(int64(0), s)
		f.Add(int64(1)<<40, s)
	}
	f.Add(int64(-1), "BB")
	f.Add(int64(math.MaxInt64-1), "AB")
	f.Fuzz(func(t *testing.T, base int64, s string) {
		ranges, err := Decode(base, s)
		if err != nil {
			return
		}
		at := base
		for i, r := range ranges {
			if r.From < at || r.To <= r.From {
				t.Fatalf("Decode(%d, %q) = %v: range %d is out of order or empty", base, s, ranges, i)
			}
			at = r.To
		}
		again, err := Decode(base, Encode(base, ranges))
		if err != nil {
			t.Fatalf("Decode(%d, Encode(%v)) of %q: %v", base, ranges, s, err)
		}
		if !reflect.DeepEqual(mergeTouching(ranges), again) {
			t.Fatalf("Decode(%d, %q) = %v, but its re-encoding decodes to %v", base, s, ranges, again)
		}
	})
}

// mergeTouching merges ranges that touch, as Encode does.
func mergeTouching(ranges []Range) []Range {
	var out []Range
	for _, r := range ranges {
		if n := len(out); n > 0 && out[n-1].To == r.From {
			out[n-1].To = r.To
			continue
		}
		out = append(out, r)
	}
	return out
}

// TestRelative checks Kafka-Pixy's display: ranges counted from the
// committed offset.
func TestRelative(t *testing.T) {
	got := Human(Relative(10, []Range{{From: 11, To: 12}, {From: 13, To: 15}}))
	if got != "1-2,3-5" {
		t.Fatalf("got %q, want 1-2,3-5", got)
	}
}
