package fetch

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// A message id is a stream's whole position: for each partition, the next
// offset to read. Version 1, as Zilla writes it: byte 0x01, the partition
// count, then each partition id and next offset, every number a ZigZag
// varint. The id alone is enough to resume on any Ferry instance.
const idVersion = 1

// Offsets that stand for a position rather than name one, as Kafka's
// ListOffsets does. Zilla writes one of them for a partition that has
// delivered nothing yet: offsetEarliest (-2), or offsetLatest (-1) when
// its subscriber started at the tail. Ferry writes real offsets only, and
// resumes such a partition from its log start either way (see
// Route.startPosition).
const (
	offsetEarliest = -2
	offsetLatest   = -1
)

// Position is the next offset to read, per partition.
type Position map[int32]int64

func (p Position) clone() Position {
	c := make(Position, len(p))
	for k, v := range p {
		c[k] = v
	}
	return c
}

// appendID appends the version-1 message id of p, partitions in order.
func appendID(b []byte, p Position) []byte {
	parts := make([]int32, 0, len(p))
	for id := range p {
		parts = append(parts, id)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	b = append(b, idVersion)
	b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(len(parts))))
	for _, id := range parts {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(id)))
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(p[id]))
	}
	return b
}

// withID is a record value with the message id appended as an unknown
// length-delimited field, which protobuf parsers keep and ignore.
func withID(value []byte, field protowire.Number, p Position) []byte {
	return withIDBytes(value, field, appendID(make([]byte, 0, 2+4*len(p)), p))
}

// withIDBytes is a record value with id appended as field, as withID.
func withIDBytes(value []byte, field protowire.Number, id []byte) []byte {
	b := make([]byte, 0, len(value)+len(id)+8)
	b = append(b, value...)
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, id)
}

// parseID decodes a version-1 message id. An offset may be
// offsetEarliest or offsetLatest; no other negative offset is accepted.
func parseID(b []byte) (Position, error) {
	if len(b) == 0 {
		return nil, errors.New("empty message id")
	}
	if b[0] != idVersion {
		return nil, fmt.Errorf("message id version %d is not supported (want %d)", b[0], idVersion)
	}
	b = b[1:]
	next := func(what string) (int64, error) {
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, fmt.Errorf("message id is truncated at its %s", what)
		}
		b = b[n:]
		return protowire.DecodeZigZag(v), nil
	}
	count, err := next("partition count")
	if err != nil {
		return nil, err
	}
	if count < 0 || count > 1<<16 {
		return nil, fmt.Errorf("message id names %d partitions", count)
	}
	p := make(Position, count)
	for i := int64(0); i < count; i++ {
		id, err := next("partition id")
		if err != nil {
			return nil, err
		}
		off, err := next("offset")
		if err != nil {
			return nil, err
		}
		if id < 0 || id > 1<<31-1 {
			return nil, fmt.Errorf("message id names partition %d, which no topic can have", id)
		}
		if off < 0 && off != offsetEarliest && off != offsetLatest {
			return nil, fmt.Errorf("message id has partition %d at offset %d: a negative offset must be -2 (earliest) or -1 (latest)", id, off)
		}
		if _, dup := p[int32(id)]; dup {
			return nil, fmt.Errorf("message id names partition %d twice", id)
		}
		p[int32(id)] = off
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("message id has %d bytes past its end", len(b))
	}
	return p, nil
}

// decodeIDText decodes the text form of a message id: base64url (as
// clients send last-message-id) or standard base64 (as gRPC carries binary
// metadata), with or without padding.
func decodeIDText(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// EncodeIDText is the base64url form of a message id that a client sends
// back in last-message-id.
func EncodeIDText(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// IDFromMessage returns the message id appended to a response message as
// field, for clients and tests; ok is false when there is none.
func IDFromMessage(msg []byte, field protowire.Number) (id []byte, ok bool) {
	// The last occurrence wins, as protobuf merges.
	found := false
	if !eachBytes(msg, field, func(v []byte) { id, found = v, true }) || !found {
		return nil, false
	}
	return id, true
}

// eachBytes calls fn with every length-delimited value of field in msg, in
// order, and reports whether msg decodes.
func eachBytes(msg []byte, field protowire.Number, fn func([]byte)) bool {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return false
		}
		msg = msg[n:]
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return false
		}
		if num == field && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(msg)
			fn(v)
		}
		msg = msg[m:]
	}
	return true
}
