package frame

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestBufferPoolClasses(t *testing.T) {
	for _, tc := range []struct{ n, wantCap int }{
		{1, 1 << 10}, {1 << 10, 1 << 10}, {1<<10 + 1, 2 << 10}, {40 << 10, 64 << 10},
		{16 << 20, 16 << 20}, {16<<20 + 1, 16<<20 + 1}, {0, 0},
	} {
		b := pool.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.wantCap)
		}
		pool.Put(b)
	}
	// A buffer that Get did not make, of a capacity outside the classes,
	// is not handed out again.
	odd := make([]byte, 3000)
	pool.Put(&odd)
	for range 100 {
		if b := pool.Get(2500); cap(*b) != 4<<10 {
			t.Fatalf("Get(2500) returned a buffer of capacity %d", cap(*b))
		}
	}
}

// TestCodecRoundTrip marshals and unmarshals messages below and above the
// pooling threshold and above 32 KiB, twice each, so that the second round
// reuses (uncleared) pooled buffers, and checks that what comes back is
// what went in.
func TestCodecRoundTrip(t *testing.T) {
	c := Codec{}
	for range 2 {
		for _, n := range []int{10, 5000, 40 << 10, 3 << 20} {
			in := wrapperspb.Bytes(bytes.Repeat([]byte{byte(n)}, n))
			data, err := c.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := proto.Marshal(in)
			if got := data.Materialize(); !bytes.Equal(got, want) {
				t.Fatalf("%d bytes: marshalled %d bytes differ from proto.Marshal's %d", n, len(got), len(want))
			}
			// Received in 16 KiB pieces, as frames arrive.
			var parts mem.BufferSlice
			for b := data.Materialize(); len(b) > 0; {
				k := min(len(b), 16<<10)
				parts = append(parts, mem.SliceBuffer(b[:k]))
				b = b[k:]
			}
			data.Free()
			out := new(wrapperspb.BytesValue)
			if err := c.Unmarshal(parts, out); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(in, out) {
				t.Fatalf("%d bytes: round trip changed the message", n)
			}
		}
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("marshalling a string did not fail")
	}
	f := &Frame{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1, 2})}, f); err != nil || !bytes.Equal(f.Bytes, []byte{1, 2}) {
		t.Errorf("frame: %v %v", f.Bytes, err)
	}
}
