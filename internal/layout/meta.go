package layout

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/metadata"
)

// This file converts between gRPC metadata and the meta: headers of the
// layout: which keys belong to the transport and never travel, how binary
// (-bin) values are carried (base64 text in Kafka, raw bytes in gRPC), and
// which header names can become gRPC metadata at all.

// reserved reports whether k belongs to the transport (pseudo-headers,
// grpc-*, content-type, te, user-agent, and HTTP/1.1's connection-specific
// headers, which a web call's metadata may hold and which HTTP/2 forbids:
// a server refuses a call that carries them) and so is never written as a
// header, nor taken from one as metadata.
func reserved(k string) bool {
	switch k {
	case "", "content-type", "te", "user-agent",
		"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-")
}

// writtenKey reports whether metadata key k is written as a meta: header:
// every key but the transport's, and of those grpc-accept-encoding, which
// Zilla writes too. Reading never turns it back into metadata (it is
// reserved, see checkKey). The other grpc-* keys (grpc-timeout,
// grpc-encoding, ...) are not written: they describe one hop.
func writtenKey(k string) bool { return !reserved(k) || k == "grpc-accept-encoding" }

// checkKey returns why k cannot be a gRPC metadata key Ferry passes on, or
// nil.
func checkKey(k string) error {
	if reserved(k) {
		return fmt.Errorf("%q is reserved for the transport", k)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%q has %q, which gRPC metadata keys cannot hold", k, c)
		}
	}
	return nil
}

// sortedKeys appends to keys those of md that are written (see
// writtenKey) and that keep accepts (keep may be nil), sorted so the
// layout is deterministic. Zilla keeps the order the entries arrived in.
func sortedKeys(keys []string, md metadata.MD, keep func(string) bool) []string {
	for k := range md {
		if writtenKey(k) && (keep == nil || keep(k)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// appendValues appends the values of metadata key k as headers named name,
// one header per value. Zilla joins a repeated key into one header
// ("v1, v2"). Binary values are written as the unpadded base64 text gRPC
// puts on the wire.
func appendValues(hs []kgo.RecordHeader, name, k string, vs []string) []kgo.RecordHeader {
	bin := strings.HasSuffix(k, "-bin")
	for _, v := range vs {
		val := []byte(v)
		if bin {
			val = []byte(base64.RawStdEncoding.EncodeToString(val))
		}
		hs = append(hs, kgo.RecordHeader{Key: name, Value: val})
	}
	return hs
}

// appendMetadata appends md's entries to hs as prefix+key headers, skipping
// the keys that are not written and those keep rejects (keep may be nil).
func appendMetadata(hs []kgo.RecordHeader, md metadata.MD, prefix string, keep func(string) bool) []kgo.RecordHeader {
	var buf [16]string // most calls' metadata: no allocation per record
	for _, k := range sortedKeys(buf[:0], md, keep) {
		hs = appendValues(hs, prefix+k, k, md[k])
	}
	return hs
}

// metadataFromHeader turns one meta: header, its name without the prefix,
// into a metadata entry: the name lower-cased and checked, a binary value
// decoded from standard base64 with or without padding.
func metadataFromHeader(name string, value []byte) (string, string, error) {
	name = strings.ToLower(name)
	if err := checkKey(name); err != nil {
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

// addMetadata adds header h to md when its name starts with prefix, and
// returns md, created if it was nil and h was added. A header with the
// prefix that cannot be gRPC metadata is not added; err says why.
func addMetadata(md metadata.MD, h kgo.RecordHeader, prefix string) (metadata.MD, error) {
	name, ok := strings.CutPrefix(h.Key, prefix)
	if !ok {
		return md, nil
	}
	k, v, err := metadataFromHeader(name, h.Value)
	if err != nil {
		return md, err
	}
	if md == nil {
		md = metadata.MD{}
	}
	md[k] = append(md[k], v)
	return md, nil
}

// MetadataFromHeaders collects every header of hs whose name starts with
// prefix as gRPC metadata; headers that cannot be gRPC metadata are
// skipped. The result is never nil.
func MetadataFromHeaders(hs []kgo.RecordHeader, prefix string) metadata.MD {
	md := metadata.MD{}
	for _, h := range hs {
		md, _ = addMetadata(md, h, prefix)
	}
	return md
}
