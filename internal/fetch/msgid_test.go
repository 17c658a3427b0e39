package fetch

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"
)

// TestMessageIDVectors are the examples of the record layout spec.
func TestMessageIDVectors(t *testing.T) {
	for _, tc := range []struct {
		pos  Position
		want string
	}{
		{Position{0: 1}, "01020002"},
		{Position{1: 1, 0: 2}, "010400040202"},
	} {
		if got := hex.EncodeToString(appendID(nil, tc.pos)); got != tc.want {
			t.Errorf("id(%v) = %s, want %s", tc.pos, got, tc.want)
		}
	}
	framed := withID(nil, 32767, Position{0: 2, 1: 1})
	if got, want := hex.EncodeToString(framed), "faff0f06010400040202"; got != want {
		t.Errorf("framed id = %s, want %s", got, want)
	}
	// The id is appended to the value, and found again.
	msg := withID([]byte{0x0a, 0x02, 'h', 'i'}, 32767, Position{0: 1})
	id, ok := IDFromMessage(msg, 32767)
	if !ok || hex.EncodeToString(id) != "01020002" || !bytes.HasPrefix(msg, []byte{0x0a, 0x02, 'h', 'i'}) {
		t.Errorf("IDFromMessage(%x) = %x, %v", msg, id, ok)
	}
}

func TestParseID(t *testing.T) {
	for _, p := range []Position{{0: 0}, {0: 1}, {0: 2, 1: 1, 2: 1 << 40}, {}} {
		got, err := parseID(appendID(nil, p))
		if err != nil || !reflect.DeepEqual(got, p) {
			t.Errorf("parseID(appendID(%v)) = %v, %v", p, got, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":       {},
		"version":     {2, 2, 0, 2},
		"truncated":   {1, 4, 0, 2},
		"trailing":    {1, 2, 0, 2, 9},
		"negative":    {1, 2, 0, 5}, // -3: neither earliest nor latest
		"minus 4":     {1, 2, 0, 7},
		"duplicate":   {1, 4, 0, 2, 0, 2},
		"huge count":  {1, 0xfe, 0xff, 0xff, 0x0f},
		"bad varint":  {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"neg part id": {1, 2, 1, 2},
	} {
		if _, err := parseID(b); err == nil {
			t.Errorf("%s: parseID(%x) accepted", name, b)
		}
	}
}

// TestParseIDEarliestLatest: Zilla writes offset -2 (Kafka's "earliest")
// for a partition that has delivered nothing yet, and -1 is Kafka's
// "latest"; both are positions a resume id may hold.
func TestParseIDEarliestLatest(t *testing.T) {
	// Zilla's id after the first record of partition 0 of three.
	raw, err := decodeIDText("AQYAAgIDBAM")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parseID(raw); err != nil || !reflect.DeepEqual(got, Position{0: 1, 1: offsetEarliest, 2: offsetEarliest}) {
		t.Errorf("parseID(%x) = %v, %v", raw, got, err)
	}
	if got, err := parseID([]byte{1, 4, 0, 1, 2, 3}); err != nil || !reflect.DeepEqual(got, Position{0: offsetLatest, 1: offsetEarliest}) {
		t.Errorf("parseID(latest, earliest) = %v, %v", got, err)
	}
	// Written again, they keep their bytes.
	if got := hex.EncodeToString(appendID(nil, Position{0: 1, 1: -2, 2: -2})); got != "0106000202030403" {
		t.Errorf("appendID = %s, want 0106000202030403", got)
	}
	_, err = parseID([]byte{1, 2, 2, 5})
	if err == nil || err.Error() != "message id has partition 1 at offset -3: a negative offset must be -2 (earliest) or -1 (latest)" {
		t.Errorf("offset -3: %v", err)
	}
}

func TestDecodeIDText(t *testing.T) {
	id := []byte{0x01, 0x04, 0x00, 0x04, 0x02, 0xfe, 0xff}
	for _, s := range []string{
		"AQQABAL-_w", "AQQABAL-_w==", // base64url, with and without padding
		"AQQABAL+/w", "AQQABAL+/w==", // standard, as -bin metadata carries it
	} {
		got, err := decodeIDText(s)
		if err != nil || !bytes.Equal(got, id) {
			t.Errorf("decodeIDText(%q) = %x, %v", s, got, err)
		}
	}
	if _, err := decodeIDText("not base64!"); err == nil {
		t.Error("accepted text that is not base64")
	}
}

func FuzzParseID(f *testing.F) {
	f.Add([]byte{1, 2, 0, 2})
	f.Add([]byte{1, 4, 0, 4, 2, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseID(b)
		if err != nil {
			return
		}
		// Whatever parses encodes back to the same position.
		again, err := parseID(appendID(nil, p))
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("round trip of %x: %v, %v", b, again, err)
		}
	})
}
