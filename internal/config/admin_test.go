package config

import (
	"strings"
	"testing"
)

// TestAdminListener: the admin listener's defaults, an empty address that
// turns it off, and the errors of a bad address and of pprof without a
// listener, located in the file.
func TestAdminListener(t *testing.T) {
	const base = "clusters: [{name: default}]\nkafka_api: {enabled: true}\n"
	for _, tc := range []struct {
		name, yaml, err string
		want            AdminListener
		metrics         bool
	}{
		{name: "defaults", want: AdminListener{Address: "127.0.0.1:7159"}, metrics: true},
		{name: "off", yaml: "listeners: {admin: {address: \"\"}}\nmetrics: {enabled: false}\n", want: AdminListener{}},
		{name: "pprof", yaml: "listeners: {admin: {address: \"0.0.0.0:9000\", pprof: true}}\n", want: AdminListener{Address: "0.0.0.0:9000", PProf: true}, metrics: true},
		{name: "bad address", yaml: "listeners:\n  admin: {address: localhost}\n", err: `ferry.yaml:4: listeners.admin.address: "localhost" is not host:port`},
		{name: "pprof without listener", yaml: "listeners:\n  admin: {address: \"\", pprof: true}\n", err: "ferry.yaml:4: listeners.admin.pprof: needs listeners.admin.address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("ferry.yaml", []byte(base+tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Listeners.Admin != tc.want || cfg.Metrics.Enabled != tc.metrics {
				t.Errorf("listeners.admin %+v, metrics.enabled %v; want %+v, %v", cfg.Listeners.Admin, cfg.Metrics.Enabled, tc.want, tc.metrics)
			}
		})
	}
}
