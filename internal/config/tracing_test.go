package config

import (
	"strings"
	"testing"
)

// TestTracingValidation: the tracing section's errors name the key and
// what to do; a disabled section is not checked beyond its ranges.
func TestTracingValidation(t *testing.T) {
	const base = "kafka_api: {enabled: true}\ntracing:\n"
	for _, tc := range []struct{ yaml, want string }{
		{"  enabled: true\n  otlp_endpoint: collector\n", `t.yaml:4: tracing.otlp_endpoint: "collector" is not host:port`},
		{"  enabled: true\n  otlp_endpoint: collector:99999\n", `t.yaml:4: tracing.otlp_endpoint: "collector:99999" has no valid port`},
		{"  enabled: true\n  service_name: \"\"\n", "t.yaml:4: tracing.service_name: is required"},
		{"  sample_per_million: 1000001\n", "t.yaml:3: tracing.sample_per_million: 1000001 is out of range: use 0 to 1000000"},
	} {
		_, err := Parse("t.yaml", []byte(base+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	cfg, err := Parse("t.yaml", []byte(base+"  enabled: true\n  otlp_endpoint: otel.example:4317\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.Tracing; !tr.Insecure || tr.SamplePerMillion != 1_000_000 || tr.ServiceName != "ferry" {
		t.Errorf("defaults: %+v", tr)
	}
}
