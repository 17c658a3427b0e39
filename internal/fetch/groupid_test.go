package fetch

import (
	"fmt"
	"strings"
	"testing"
)

func TestGroupID(t *testing.T) {
	for _, tc := range []struct {
		partition int32
		offset    int64
		hex       string
	}{
		{0, 0, "020000"},
		{0, 7, "02000e"},
		{3, 1 << 40, "0206808080808040"},
		{1<<31 - 1, 1<<63 - 1, "02feffffff0ffeffffffffffffffff01"},
	} {
		id := GroupID(tc.partition, tc.offset)
		if got := fmt.Sprintf("%x", id); got != tc.hex {
			t.Errorf("GroupID(%d, %d) = %s, want %s", tc.partition, tc.offset, got, tc.hex)
		}
		p, o, err := ParseGroupID(id)
		if err != nil || p != tc.partition || o != tc.offset {
			t.Errorf("ParseGroupID(%x) = %d, %d, %v", id, p, o, err)
		}
	}
}

func TestParseGroupIDErrors(t *testing.T) {
	for _, tc := range []struct {
		id   []byte
		want string
	}{
		{nil, "empty"},
		{appendID(nil, Position{0: 2}), "stream position"},
		{[]byte{9}, "starts with 9"},
		{[]byte{2}, "truncated at its partition"},
		{[]byte{2, 0}, "truncated at its offset"},
		{[]byte{2, 0, 0, 0}, "1 bytes past its end"},
		{[]byte{2, 1, 0}, "partition -1"},
		{[]byte{2, 0, 1}, "offset -1"},
	} {
		if _, _, err := ParseGroupID(tc.id); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseGroupID(%x) = %v, want %q", tc.id, err, tc.want)
		}
	}
}

// FuzzParseGroupID: any input decodes or fails cleanly, and what decodes
// encodes to an id that decodes the same.
func FuzzParseGroupID(f *testing.F) {
	f.Add(GroupID(0, 7))
	f.Add([]byte{2, 0x80})
	f.Add(appendID(nil, Position{1: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, o, err := ParseGroupID(b)
		if err != nil {
			return
		}
		// Varints may carry redundant continuation bytes, so b need not be
		// canonical; its canonical form must decode the same.
		if p2, o2, err := ParseGroupID(GroupID(p, o)); err != nil || p2 != p || o2 != o {
			t.Fatalf("%x decodes to %d, %d, whose id decodes to %d, %d, %v", b, p, o, p2, o2, err)
		}
	})
}

func TestEachBytes(t *testing.T) {
	msg := withIDBytes(withIDBytes([]byte{0x08, 0x01}, 1, []byte("a")), 1, []byte("b"))
	var got []string
	if !eachBytes(msg, 1, func(v []byte) { got = append(got, string(v)) }) || strings.Join(got, ",") != "a,b" {
		t.Fatalf("eachBytes = %q", got)
	}
	if eachBytes([]byte{0x0a, 0x05}, 1, func([]byte) {}) {
		t.Fatal("a truncated message decoded")
	}
}
