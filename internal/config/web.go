package config

import (
	"errors"
	"net/url"
	"strings"
	"time"
)

// Web is how the gRPC listener serves browsers and HTTP clients: the
// gRPC-Web and Connect protocols, and REST paths from google.api.http
// annotations, on the same port as gRPC.
type Web struct {
	// Enabled serves gRPC-Web, Connect and REST beside gRPC.
	Enabled bool `yaml:"enabled"`
	// CORS lets pages of other origins call. Off unless AllowedOrigins is
	// set.
	CORS CORS `yaml:"cors"`
}

// CORS is the cross-origin policy of a listener.
type CORS struct {
	// AllowedOrigins are the origins whose pages may call, such as
	// "https://app.example.com", "https://*.example.com", or "*" for any.
	// None: CORS is off and browsers refuse cross-origin calls.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHeaders are request headers pages may send besides the ones
	// the protocols need and authorization, such as the metadata entries
	// routes read.
	AllowedHeaders []string `yaml:"allowed_headers"`
	// ExposedHeaders are response headers pages may read besides the
	// protocols' own (grpc-status, grpc-message, ...).
	ExposedHeaders []string `yaml:"exposed_headers"`
	// AllowCredentials lets pages send cookies and client certificates.
	AllowCredentials bool `yaml:"allow_credentials"`
	// MaxAge is how long browsers may keep a preflight's answer.
	MaxAge time.Duration `yaml:"max_age"`
}

// Enabled reports whether CORS is on.
func (c CORS) Enabled() bool { return len(c.AllowedOrigins) > 0 }

// web checks listeners.grpc.web and listeners.http.cors.
func (v *validator) web() {
	v.cors("listeners.grpc.web.cors", v.cfg.Listeners.GRPC.Web.CORS)
	v.cors("listeners.http.cors", v.cfg.Listeners.HTTP.CORS)
}

// cors checks the CORS section at p.
func (v *validator) cors(p string, c CORS) {
	if !c.Enabled() {
		for key, set := range map[string]bool{
			"allowed_headers":   len(c.AllowedHeaders) > 0,
			"exposed_headers":   len(c.ExposedHeaders) > 0,
			"allow_credentials": c.AllowCredentials,
		} {
			if set {
				v.errf(p+"."+key, "has no effect without allowed_origins, which turns CORS on")
			}
		}
		return
	}
	for i, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			v.errf(p+".allowed_origins", "entry %d (%q): %v", i, o, err)
		}
		if o == "*" && c.AllowCredentials {
			v.errf(p+".allow_credentials", "cannot be set with the origin \"*\": browsers refuse credentials for any origin; list the origins")
		}
	}
}

// checkOrigin accepts "*", or scheme://host[:port] with at most one "*"
// in the host, and nothing after it.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(strings.Replace(o, "*", "wildcard", 1))
	switch {
	case err != nil:
		return err
	case strings.Count(o, "*") > 1:
		return errors.New("has more than one \"*\"")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("is not an origin: write scheme://host[:port], such as https://app.example.com")
	case u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return errors.New("is not an origin: write scheme://host[:port] with no path, such as https://app.example.com")
	}
	return nil
}
