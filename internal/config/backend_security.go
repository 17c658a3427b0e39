package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// transportMetadata are the metadata keys that gRPC or HTTP/2 sets on a
// call itself: grpc-go drops them from a call's metadata, or the server
// refuses the call.
var transportMetadata = map[string]bool{
	"content-type": true, "te": true, "user-agent": true, "host": true,
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true,
}

// ferryMetadata are the metadata keys a back end sets on each call itself,
// with what each holds. Static metadata must not replace them.
var ferryMetadata = map[string]string{
	"x-request-id":         "the caller's request id",
	"ferry-correlation-id": "the request's correlation id",
	"idempotency-key":      "the caller's idempotency key, or the correlation id",
}

// MetadataValues returns the back end's static metadata as it goes on the
// wire: the values of binary keys (ending in -bin) decoded from base64.
// Errors name the key, never the value.
func (b Backend) MetadataValues() (map[string]string, error) {
	return metadataValues(b.Metadata, ferryMetadata)
}

// MetadataValues returns the source's static metadata as it goes on the
// wire (see Backend.MetadataValues). A source's call carries no metadata
// of Ferry's own, so every legal key may be given.
func (s Source) MetadataValues() (map[string]string, error) {
	return metadataValues(s.Metadata, nil)
}

// metadataValues decodes static metadata: the values of binary keys from
// base64. reserved are the keys Ferry sets on the calls itself.
func metadataValues(md map[string]string, reserved map[string]string) (map[string]string, error) {
	m := make(map[string]string, len(md))
	for k, v := range md {
		val, err := metadataEntry(k, v, reserved)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", k, err)
		}
		m[k] = val
	}
	return m, nil
}

// metadataEntry checks one entry of a back end's static metadata and
// returns its value as sent. Errors never hold the value, which is often a
// secret.
func metadataEntry(key, val string, reserved map[string]string) (string, error) {
	if err := checkMetadataKey(key, reserved); err != nil {
		return "", err
	}
	if val == "" {
		return "", errors.New("is empty: give it a value (an unset ${NAME:-} leaves it empty)")
	}
	if strings.HasSuffix(key, "-bin") {
		enc := base64.StdEncoding
		if !strings.HasSuffix(val, "=") && len(val)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		b, err := enc.DecodeString(val)
		if err != nil {
			return "", errors.New("is not base64: the values of keys ending in -bin are binary, written in base64")
		}
		return string(b), nil
	}
	for i := 0; i < len(val); i++ {
		if c := val[i]; c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("has a byte that is not printable ASCII at position %d: gRPC allows only those in text values; for binary values, end the key in -bin and write the value in base64", i)
		}
	}
	return val, nil
}

// checkMetadataKey checks a static metadata key: a legal gRPC metadata key
// that neither gRPC, HTTP/2 nor Ferry sets itself.
func checkMetadataKey(k string, reserved map[string]string) error {
	switch {
	case k == "":
		return errors.New("an empty metadata key is not allowed")
	case k[0] == ':':
		return fmt.Errorf("%q is an HTTP/2 pseudo-header, which gRPC sets itself", k)
	case strings.ToLower(k) != k:
		return fmt.Errorf("%q has upper-case letters: gRPC metadata keys are lower case, write %q", k, strings.ToLower(k))
	}
	for _, r := range k {
		if !(r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("%q has %q: gRPC metadata keys allow only a-z, 0-9, '-', '_' and '.'", k, r)
		}
	}
	switch {
	case strings.HasPrefix(k, "grpc-"):
		return fmt.Errorf("%q: keys starting with grpc- are reserved for gRPC", k)
	case transportMetadata[k]:
		return fmt.Errorf("%q is set by gRPC itself and cannot be given as metadata", k)
	case reserved[k] != "":
		return fmt.Errorf("%q is set by Ferry on every call, to %s", k, reserved[k])
	}
	return nil
}

// backendSecurity checks a back end's tls and metadata sections, reading
// the files tls names so that `ferry validate` finds a missing or broken
// one.
func (v *validator) backendSecurity(p string, b Backend) {
	v.clientTLS(p+".tls", b.TLS)
	v.metadata(p+".metadata", b.Metadata, ferryMetadata)
}

// metadata checks static gRPC metadata at path p, key by key; reserved
// are the keys Ferry sets on the calls itself.
func (v *validator) metadata(p string, md map[string]string, reserved map[string]string) {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := metadataEntry(k, md[k], reserved); err != nil {
			v.errf(p+"."+k, "%v", err)
		}
	}
}

// clientTLS checks the tls section of a connection Ferry makes, at path p.
func (v *validator) clientTLS(p string, t ClientTLS) {
	if !t.Enabled {
		set := map[string]bool{"ca_file": t.CAFile != "", "cert_file": t.CertFile != "", "key_file": t.KeyFile != "",
			"server_name": t.ServerName != "", "insecure_skip_verify": t.InsecureSkipVerify}
		for _, key := range []string{"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"} {
			if set[key] {
				v.errf(p+"."+key, "is never used: set %s.enabled: true", p)
			}
		}
		return
	}
	if _, key, err := t.config(); err != nil {
		v.errf(p+"."+key, "%v", err)
	}
}
