package config

import (
	"strings"
	"testing"
	"time"
)

func TestAuthErrors(t *testing.T) {
	const head = "clusters:\n  - name: main\n    brokers: [\"k:9092\"]\nprotos:\n  - files: [echo.proto]\n"
	route := func(extra string) string {
		return "routes:\n  - name: r\n    when:\n      - method: a.B/C\n    produce:\n      topic: t\n" + extra
	}
	fetch := func(filter string) string {
		return "routes:\n  - name: f\n    when:\n      - method: a.B/D\n    fetch:\n      topic: t\n      filters:\n        - " + filter + "\n"
	}
	const jwt = "auth:\n  jwt:\n    jwks_file: keys.json\n"
	cases := []struct {
		name, yaml, want string
	}{
		{"allow without auth", route("    allow:\n      - identities: [alice]\n"),
			"routes[0].allow[0]: needs callers' identities: configure auth.jwt or auth.client_certificates"},
		{"rule naming no one", jwt + route("    allow:\n      - {}\n"),
			"routes[0].allow[0]: names no caller"},
		{"bad pattern", jwt + route("    allow:\n      - roles: [\"[a\"]\n"),
			`routes[0].allow[0].roles[0]: "[a" is not a pattern`},
		{"key and key_from_identity", jwt + route("      key: k\n      key_from_identity: true\n"),
			"routes[0].produce.key_from_identity: give either key or key_from_identity, not both"},
		{"key_from_identity without auth", route("      key_from_identity: true\n"),
			"routes[0].produce.key_from_identity: needs callers' identities"},
		{"identity header is a layout header", jwt + route("      identity_header: zilla:correlation-id\n"),
			`routes[0].produce.identity_header: "zilla:correlation-id" is a header of the record layout`},
		{"fetch key from metadata and identity", jwt + fetch("{key_from_metadata: user, key_from_identity: true}"),
			"routes[0].fetch.filters[0].key_from_identity: give one of key, key_from_metadata and key_from_identity"},
		{"fetch header from identity without auth", fetch("{headers_from_identity: [owner]}"),
			"routes[0].fetch.filters[0].headers_from_identity[0]: needs callers' identities"},
		{"both key sources", "auth:\n  jwt:\n    jwks_file: k.json\n    jwks_url: https://idp.example/jwks\n" + route(""),
			"auth.jwt.jwks_url: give either jwks_file or jwks_url, not both"},
		{"plain http key URL", "auth:\n  jwt:\n    jwks_url: http://idp.example/jwks\n" + route(""),
			`auth.jwt.jwks_url: "http://idp.example/jwks" is not https`},
		{"audience without keys", "auth:\n  jwt:\n    audience: ferry\n" + route(""),
			"auth.jwt: needs jwks_file or jwks_url"},
		{"certificates without a verifying listener", "auth:\n  client_certificates:\n    identity: common_name\n" + route(""),
			"auth.client_certificates.identity: no listener verifies client certificates"},
		{"unknown certificate name", "auth:\n  client_certificates:\n    identity: serial\n" + route(""),
			`auth.client_certificates.identity: "serial" is not a certificate name`},
		{"anonymous alone", "auth:\n  anonymous: true\n" + route(""),
			"auth.anonymous: needs auth.jwt or auth.client_certificates"},
		{"leeway out of range", "auth:\n  jwt:\n    jwks_file: k.json\n    leeway: 1h\n" + route(""),
			"auth.jwt.leeway"},
		{"kafka api rule allowing nothing", jwt + "kafka_api:\n  enabled: true\n  allow:\n    - roles: [ops]\n",
			"kafka_api.allow[0]: allows nothing"},
		{"kafka api consume without groups", jwt + "kafka_api:\n  enabled: true\n  allow:\n    - roles: [ops]\n      consume: [orders]\n",
			"kafka_api.allow[0].groups: is required with consume"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("ferry.yaml", []byte(head+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestAuthDefaults(t *testing.T) {
	cfg, err := Parse("/etc/ferry/ferry.yaml", []byte(`
protos:
  - files: [echo.proto]
auth:
  jwt:
    jwks_file: keys/jwks.json
    audience: ferry
routes:
  - when:
      - method: a.B/C
    produce:
      topic: t
      key_from_identity: true
    allow:
      - roles: [echo]
kafka_api:
  enabled: true
  allow:
    - identities: ["svc-*"]
      produce: ["orders.*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	j := cfg.Auth.JWT
	if j.JWKSFile != "/etc/ferry/keys/jwks.json" || j.JWKSRefresh != 5*time.Minute || j.Leeway != 30*time.Second ||
		j.IdentityClaim != "sub" || j.RolesClaim != "roles" {
		t.Errorf("jwt defaults: %+v", j)
	}
	if !cfg.Auth.Enabled() || cfg.Auth.Anonymous {
		t.Errorf("auth: %+v", cfg.Auth)
	}
}
