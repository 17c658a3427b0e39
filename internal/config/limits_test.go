package config

import (
	"strings"
	"testing"
	"time"
)

// TestFetchAndHealthCheckKeys: the defaults, and every out-of-range value
// refused with its key, line and range.
func TestFetchAndHealthCheckKeys(t *testing.T) {
	const base = "clusters:\n  - name: a\n%s\nprotos: [{files: [a.proto]}]\nroutes:\n  - when: [{method: a.B/C}]\n    fetch: {topic: t}\n%s"
	cfg, err := Parse("ferry.yaml", []byte(strings.NewReplacer("%s", "").Replace(base)))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Clusters[0].HealthCheck; h != (HealthCheck{Interval: 5 * time.Second, UnhealthyAfter: 3, HealthyAfter: 2}) {
		t.Errorf("health_check defaults = %+v", h)
	}
	if f := cfg.Fetch; f != (Fetch{MaxCatchUpReaders: 64, CatchUpWait: 30 * time.Second, CatchUpWindowBytes: 4 << 20, PartitionRefresh: 30 * time.Second,
		Cache: FetchCache{MaxBytes: 64 << 20}}) {
		t.Errorf("fetch defaults = %+v", f)
	}
	cases := []struct{ cluster, top, want string }{
		{"    health_check: {interval: 10ms}", "", "ferry.yaml:3: clusters[0].health_check.interval: 10ms is out of range: use 100ms to 1h"},
		{"    health_check: {unhealthy_after: 101}", "", "ferry.yaml:3: clusters[0].health_check.unhealthy_after: 101 is out of range: use 1 to 100"},
		{"    health_check: {healthy_after: -1}", "", "ferry.yaml:3: clusters[0].health_check.healthy_after: -1 is out of range: use 1 to 100"},
		{"", "fetch: {max_catch_up_readers: 0}", "ferry.yaml:8: fetch.max_catch_up_readers: 0 is out of range: use 1 to 10000"},
		{"", "fetch: {catch_up_wait: 11m}", "ferry.yaml:8: fetch.catch_up_wait: 11m is out of range: use 0s to 10m"},
		{"", "fetch: {catch_up_window_bytes: 1024}", "ferry.yaml:8: fetch.catch_up_window_bytes: 1024 is out of range: use 4096 to 68719476736"},
		{"", "fetch: {partition_refresh: 2h}", "ferry.yaml:8: fetch.partition_refresh: 2h is out of range: use 0s to 1h"},
		{"", "fetch: {cache: {max_bytes: 100}}", "ferry.yaml:8: fetch.cache.max_bytes: 100 is out of range: use 4096 to 1099511627776"},
		{"", "fetch: {cache: {max_age: -1s}}", "ferry.yaml:8: fetch.cache.max_age: -1s is out of range: use 0s to 720h"},
	}
	for _, c := range cases {
		y := strings.Replace(strings.Replace(base, "%s", c.cluster, 1), "%s", c.top, 1)
		_, err := Parse("ferry.yaml", []byte(y))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s%s: error %v, want %q", c.cluster, c.top, err, c.want)
		}
	}
}
