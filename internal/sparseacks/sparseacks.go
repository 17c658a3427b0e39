// Package sparseacks reads and writes Kafka-Pixy's sparse acknowledgements:
// offsets a consumer acknowledged beyond the group's committed offset, kept
// in the offset commit's metadata string so that a restart or a rebalance
// does not deliver them again. Ferry writes the same encoding so that a
// group can move between Kafka-Pixy and Ferry without redelivery.
//
// The acknowledged offsets are a list of ranges [From, To), ascending and
// disjoint. Each range is written as two varints, From - base and To - From,
// where base is the committed offset for the first range and the previous
// range's To for every later one. A varint carries 5 bits per character,
// least significant group first; a character stands for its index in the
// base64 alphabet "A–Z a–z 0–9 + /", and an index with bit 0x20 set says
// that more characters of the same varint follow.
//
// For example, with the committed offset at 0 and offsets 1 and 3
// acknowledged, the ranges are [1,2) and [3,4), written as
//
//	1-0 = 1 → "B",  2-1 = 1 → "B"   (base 0)
//	3-2 = 1 → "B",  4-3 = 1 → "B"   (base 2, the first range's end)
//
// that is "BBBB"; Human shows them as "1-2,3-4". A delta of 33 is 1 + 1<<5:
// the low group 1 with the continuation bit (index 33, "h") and then 1
// ("B"), so "hB".
package sparseacks

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Range is the offsets From, From+1, …, To-1: To is exclusive.
type Range struct {
	From, To int64
}

const (
	alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	dataBits = 5
	dataMask = 1<<dataBits - 1 // 0x1F
	more     = 1 << dataBits   // 0x20: another character follows
	// maxChars is the longest varint that can hold a non-negative int64:
	// 12 characters carry 60 bits and a 13th the remaining 3.
	maxChars = (63 + dataBits - 1) / dataBits
	invalid  = 0xFF
)

// values maps a character to its index in alphabet, or invalid.
var values = func() (v [256]byte) {
	for i := range v {
		v[i] = invalid
	}
	for i := range len(alphabet) {
		v[alphabet[i]] = byte(i)
	}
	return v
}()

// Encode writes ranges relative to the committed offset base. ranges
// should be ascending, disjoint and start at or after base; Encode
// nevertheless normalises what it is given rather than write something
// Decode would reject: it sorts a copy, drops the part of a range below
// base, merges ranges that overlap or touch and skips empty ones. No
// ranges encode as "".
func Encode(base int64, ranges []Range) string {
	var b []byte
	for _, r := range normalize(base, ranges) {
		b = appendVarint(b, uint64(r.From-base))
		b = appendVarint(b, uint64(r.To-r.From))
		base = r.To
	}
	return string(b)
}

// normalize returns ranges sorted, clipped to base, merged and without
// empty ones; it returns ranges itself when they already are.
func normalize(base int64, ranges []Range) []Range {
	ok := true
	prev := base
	for _, r := range ranges {
		// Touching ranges are merged too, as Kafka-Pixy never writes
		// them apart.
		if r.From < prev || r.To <= r.From || r.From == prev && prev != base {
			ok = false
			break
		}
		prev = r.To
	}
	if ok {
		return ranges
	}
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b Range) int { return cmp.Compare(a.From, b.From) })
	out := sorted[:0]
	for _, r := range sorted {
		r.From = max(r.From, base)
		if r.To <= r.From {
			continue
		}
		if n := len(out); n > 0 && r.From <= out[n-1].To {
			out[n-1].To = max(out[n-1].To, r.To)
			continue
		}
		out = append(out, r)
	}
	return out
}

// appendVarint appends v, 5 bits per character, least significant first.
func appendVarint(b []byte, v uint64) []byte {
	for v > dataMask {
		b = append(b, alphabet[v&dataMask|more])
		v >>= dataBits
	}
	return append(b, alphabet[v])
}

// Decode reads the ranges that s encodes relative to the committed offset
// base. It is strict: a character outside the alphabet, a varint cut
// short, a varint too large for an int64 and an empty range are errors
// naming the position (counted in bytes from 0) where they were found. An
// empty s is no ranges.
func Decode(base int64, s string) ([]Range, error) {
	if s == "" {
		return nil, nil
	}
	// Every range takes at least two characters.
	ranges := make([]Range, 0, len(s)/2)
	for pos := 0; pos < len(s); {
		start := pos
		gap, n, err := readVarint(s, pos)
		if err != nil {
			return nil, err
		}
		pos += n
		if pos == len(s) {
			return nil, fmt.Errorf("decoding sparse acks %q: range at position %d has a start but no length", s, start)
		}
		length, n, err := readVarint(s, pos)
		if err != nil {
			return nil, err
		}
		pos += n
		if length == 0 {
			return nil, fmt.Errorf("decoding sparse acks %q: range at position %d is empty", s, start)
		}
		// Both values are non-negative, so MaxInt64 minus either cannot
		// overflow, while MaxInt64 - base could for a negative base.
		if base > math.MaxInt64-gap || base+gap > math.MaxInt64-length {
			return nil, fmt.Errorf("decoding sparse acks %q: range at position %d ends beyond the largest offset", s, start)
		}
		r := Range{From: base + gap, To: base + gap + length}
		ranges = append(ranges, r)
		base = r.To
	}
	return ranges, nil
}

// readVarint reads the varint at s[pos:] and returns its value and length.
func readVarint(s string, pos int) (int64, int, error) {
	var v uint64
	for i := 0; ; i++ {
		at := pos + i
		if at == len(s) {
			return 0, 0, fmt.Errorf("decoding sparse acks %q: number at position %d is cut short at the end", s, pos)
		}
		c := values[s[at]]
		if c == invalid {
			r, _ := utf8.DecodeRuneInString(s[at:])
			return 0, 0, fmt.Errorf("decoding sparse acks %q: invalid character %q at position %d", s, r, at)
		}
		if i == maxChars-1 && c > 0x7 {
			// The 13th character may only carry bits 60 to 62.
			return 0, 0, fmt.Errorf("decoding sparse acks %q: number at position %d overflows int64", s, pos)
		}
		v |= uint64(c&dataMask) << (dataBits * i)
		if c&more == 0 {
			return int64(v), i + 1, nil
		}
	}
}

// Human formats ranges for people: "from-to" (to exclusive) separated by
// commas, such as "1-2,3-4"; no ranges are "". The offsets are absolute.
// (Kafka-Pixy's sparse_acks field shows them relative to the committed
// offset, which reads the same only when that offset is 0.)
func Human(ranges []Range) string {
	var b strings.Builder
	for i, r := range ranges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(r.From, 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatInt(r.To, 10))
	}
	return b.String()
}

// Relative returns ranges with base subtracted from both ends: the form
// Kafka-Pixy shows acknowledged offsets in, counted from the committed
// offset (committed 10 with 11 acknowledged is "1-2").
func Relative(base int64, ranges []Range) []Range {
	out := make([]Range, len(ranges))
	for i, r := range ranges {
		out[i] = Range{From: r.From - base, To: r.To - base}
	}
	return out
}
