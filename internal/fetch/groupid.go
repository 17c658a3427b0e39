package fetch

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// A group message id names one record of a group fetch route, for the
// caller to acknowledge: byte 0x02, then the partition and the offset,
// each a ZigZag varint. Its first byte tells it from a fan-out message id
// (version 1, a whole stream position), so that neither is taken for the
// other.
const groupIDKind = 2

// appendGroupID appends the group message id of a record.
func appendGroupID(b []byte, partition int32, offset int64) []byte {
	b = append(b, groupIDKind)
	b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(partition)))
	return protowire.AppendVarint(b, protowire.EncodeZigZag(offset))
}

// GroupID returns the group message id of the record at offset of
// partition, as a group fetch route appends it to its responses.
func GroupID(partition int32, offset int64) []byte {
	return appendGroupID(make([]byte, 0, 12), partition, offset)
}

// ParseGroupID decodes a group message id.
func ParseGroupID(b []byte) (partition int32, offset int64, err error) {
	switch {
	case len(b) == 0:
		return 0, 0, errors.New("empty message id")
	case b[0] == idVersion:
		return 0, 0, errors.New("a stream position (a fan-out route's message id), not the id of a group route's message")
	case b[0] != groupIDKind:
		return 0, 0, fmt.Errorf("message id starts with %d, not %d", b[0], groupIDKind)
	}
	b = b[1:]
	p, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, errors.New("message id is truncated at its partition")
	}
	b = b[n:]
	o, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, errors.New("message id is truncated at its offset")
	}
	if len(b[n:]) != 0 {
		return 0, 0, fmt.Errorf("message id has %d bytes past its end", len(b[n:]))
	}
	part, off := protowire.DecodeZigZag(p), protowire.DecodeZigZag(o)
	if part < 0 || part > 1<<31-1 {
		return 0, 0, fmt.Errorf("message id names partition %d, which no topic can have", part)
	}
	if off < 0 {
		return 0, 0, fmt.Errorf("message id names offset %d, which no record can have", off)
	}
	return int32(part), off, nil
}
