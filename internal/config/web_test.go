package config

import (
	"strings"
	"testing"
)

func TestWebErrors(t *testing.T) {
	cases := []struct{ name, web, want string }{
		{"path in origin", "      cors: {allowed_origins: [https://app.example.com/page]}\n",
			`listeners.grpc.web.cors.allowed_origins: entry 0 ("https://app.example.com/page"): is not an origin: write scheme://host[:port] with no path`},
		{"no scheme", "      cors: {allowed_origins: [app.example.com]}\n",
			`entry 0 ("app.example.com"): is not an origin: write scheme://host[:port]`},
		{"two wildcards", "      cors: {allowed_origins: [\"https://*.*.example.com\"]}\n",
			`has more than one "*"`},
		{"credentials for any origin", "      cors: {allowed_origins: [\"*\"], allow_credentials: true}\n",
			`listeners.grpc.web.cors.allow_credentials: cannot be set with the origin "*"`},
		{"headers without origins", "      cors: {allowed_headers: [x-tenant]}\n",
			`ferry.yaml:7: listeners.grpc.web.cors.allowed_headers: has no effect without allowed_origins`},
		{"max age", "      cors: {allowed_origins: [\"*\"], max_age: 48h}\n",
			`listeners.grpc.web.cors.max_age`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadCluster(t, nil, "listeners:\n  grpc:\n    web:\n"+c.web)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want it to hold %q", err, c.want)
			}
		})
	}
	cfg, err := loadCluster(t, nil, "listeners:\n  grpc:\n    web:\n      cors: {allowed_origins: [\"https://*.example.com\", \"http://localhost:8080\", \"*\"]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Listeners.GRPC.Web; !w.Enabled || !w.CORS.Enabled() {
		t.Fatalf("web %+v", w)
	}
}
