// Package meta converts between gRPC metadata and the meta: headers of
// Ferry's Kafka records, in one place for every capability: which keys
// belong to the transport and never travel, how binary (-bin) values are
// carried (base64 text in Kafka, raw bytes in gRPC), and which header names
// can become gRPC metadata at all.
package meta

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

// Reserved reports whether k belongs to the gRPC transport (pseudo-headers,
// grpc-*, content-type, te, user-agent) and so never travels as a header.
func Reserved(k string) bool {
	return k == "" || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") ||
		k == "content-type" || k == "te" || k == "user-agent"
}

// CheckKey returns why k cannot be a gRPC metadata key Ferry passes on, or
// nil.
func CheckKey(k string) error {
	if Reserved(k) {
		return fmt.Errorf("%q is reserved for the transport", k)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q has %q, which gRPC metadata keys cannot hold", k, c)
		}
	}
	return nil
}

// AppendHeaders appends md's entries to hs as prefix+name headers, sorted by
// name so the layout is deterministic, skipping reserved keys and those keep
// rejects (keep may be nil). Binary values are written as the unpadded
// base64 text gRPC puts on the wire.
func AppendHeaders(hs []kgo.RecordHeader, md metadata.MD, prefix string, keep func(string) bool) []kgo.RecordHeader {
	keys := make([]string, 0, len(md))
	for k := range md {
		if !Reserved(k) && (keep == nil || keep(k)) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		bin := strings.HasSuffix(k, "-bin")
		for _, v := range md[k] {
			val := []byte(v)
			if bin {
				val = []byte(base64.RawStdEncoding.EncodeToString(val))
			}
			hs = append(hs, kgo.RecordHeader{Key: prefix + k, Value: val})
		}
	}
	return hs
}

// FromHeader turns one meta: header, its name without the prefix, into a
// metadata entry: the name lower-cased and checked, a binary value decoded
// from standard base64 with or without padding.
func FromHeader(name string, value []byte) (string, string, error) {
	name = strings.ToLower(name)
	if err := CheckKey(name); err != nil {
		return "", "", err
	}
	if !strings.HasSuffix(name, "-bin") {
		return name, string(value), nil
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(string(value), "="))
	if err != nil {
		return "", "", fmt.Errorf("binary metadata is not base64: %w", err)
	}
	return name, string(b), nil
}

// FromHeaders collects every prefix header of hs as metadata; headers that
// cannot be gRPC metadata are skipped. The result is never nil.
func FromHeaders(hs []kgo.RecordHeader, prefix string) metadata.MD {
	md := metadata.MD{}
	for _, h := range hs {
		name, ok := strings.CutPrefix(h.Key, prefix)
		if !ok {
			continue
		}
		if k, v, err := FromHeader(name, h.Value); err == nil {
			md[k] = append(md[k], v)
		}
	}
	return md
}
