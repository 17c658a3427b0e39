package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Auth is how Ferry learns who calls it. With neither JWT nor client
// certificates configured every call is anonymous and no allow rule may be
// given.
type Auth struct {
	// JWT accepts bearer tokens in the authorization metadata entry or
	// HTTP header.
	JWT JWTAuth `yaml:"jwt"`
	// ClientCertificates takes the identity of callers that present a
	// client certificate the listener verified.
	ClientCertificates CertAuth `yaml:"client_certificates"`
	// Anonymous lets calls without credentials in, with no identity: only
	// routes without allow rules serve them. Off: they get
	// UNAUTHENTICATED (401). A call with bad credentials is refused
	// either way.
	Anonymous bool `yaml:"anonymous"`
}

// Enabled reports whether any way of authenticating is configured.
func (a Auth) Enabled() bool { return a.JWT.Enabled() || a.ClientCertificates.Enabled() }

// JWTAuth checks JWT bearer tokens against a JSON Web Key Set.
type JWTAuth struct {
	// JWKSFile is a JSON Web Key Set file, re-read when it changes.
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL is an https URL of a JSON Web Key Set, as identity
	// providers publish (http is accepted for loopback addresses only).
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefresh is how often the key set at JWKSURL is fetched again; a
	// token with a key id Ferry does not know also triggers a fetch.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// Issuer, when set, must equal the token's iss claim.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be among the token's aud claim.
	Audience string `yaml:"audience"`
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	Leeway time.Duration `yaml:"leeway"`
	// IdentityClaim is the claim that names the caller; a dotted path
	// reaches into nested claims.
	IdentityClaim string `yaml:"identity_claim"`
	// RolesClaim is the claim that lists the caller's roles: an array of
	// strings, or one string of space-separated roles (as OAuth's scope).
	RolesClaim string `yaml:"roles_claim"`
}

// Enabled reports whether JWTs are accepted.
func (j JWTAuth) Enabled() bool { return j.JWKSFile != "" || j.JWKSURL != "" }

// Client certificate name fields CertAuth.Identity may name.
const (
	CertCommonName = "common_name"
	CertSubject    = "subject"
	CertDNSName    = "dns_san"
	CertEmail      = "email_san"
	CertURI        = "uri_san"
)

// CertAuth takes identities from verified client certificates.
type CertAuth struct {
	// Identity is the certificate's name that becomes the identity:
	// common_name, subject (the whole distinguished name), dns_san,
	// email_san or uri_san (the first such subject alternative name).
	// Empty: certificates are not used for identities.
	Identity string `yaml:"identity"`
}

// Enabled reports whether client certificates give identities.
func (c CertAuth) Enabled() bool { return c.Identity != "" }

// AllowRule names callers: by identity, by role, or both (either
// matching). Patterns may use the wildcards of Go's path.Match: "*",
// "?" and character classes.
type AllowRule struct {
	// Identities are the callers' identities.
	Identities []string `yaml:"identities"`
	// Roles are roles a caller must hold one of.
	Roles []string `yaml:"roles"`
}

// APIAllowRule lets the callers it names use topics and groups of the
// Kafka API. Names are patterns as in AllowRule.
type APIAllowRule struct {
	// Identities are the callers' identities.
	Identities []string `yaml:"identities"`
	// Roles are roles a caller must hold one of.
	Roles []string `yaml:"roles"`
	// Produce are the topics the callers may produce to.
	Produce []string `yaml:"produce"`
	// Consume are the topics the callers may consume from, in the groups
	// Groups allows.
	Consume []string `yaml:"consume"`
	// Groups are the consumer groups the callers may consume in, and whose
	// offsets on the topics of Consume they may read and set.
	Groups []string `yaml:"groups"`
	// Admin are the topics and groups the callers may list, describe, and
	// read and set offsets of.
	Admin []string `yaml:"admin"`
}

// applyAuthDefaults fills the unset keys of auth.
func (c *Config) applyAuthDefaults() {
	j := &c.Auth.JWT
	if j.JWKSFile != "" {
		j.JWKSFile = resolvePath(filepath.Dir(c.file), j.JWKSFile)
	}
	if j.JWKSRefresh == 0 {
		j.JWKSRefresh = 5 * time.Minute
	}
	if j.Leeway == 0 {
		j.Leeway = 30 * time.Second
	}
	setDefault(&j.IdentityClaim, "sub")
	setDefault(&j.RolesClaim, "roles")
}

// auth checks the auth section, and every use of identities elsewhere:
// allow rules and identities in keys, headers and filters need a way to
// authenticate.
func (v *validator) auth() {
	a := v.cfg.Auth
	j := a.JWT
	switch {
	case j.JWKSFile != "" && j.JWKSURL != "":
		v.errf("auth.jwt.jwks_url", "give either jwks_file or jwks_url, not both")
	case j.JWKSURL != "":
		if err := CheckJWKSURL(j.JWKSURL); err != nil {
			v.errf("auth.jwt.jwks_url", "%v", err)
		}
	case !j.Enabled() && (j.Issuer != "" || j.Audience != ""):
		v.errf("auth.jwt", "needs jwks_file or jwks_url: the keys tokens are checked against")
	}
	if j.IdentityClaim == "" || strings.Contains(j.IdentityClaim, "..") || strings.HasPrefix(j.IdentityClaim, ".") || strings.HasSuffix(j.IdentityClaim, ".") {
		v.errf("auth.jwt.identity_claim", "%q is not a claim name or dotted path", j.IdentityClaim)
	}
	switch c := a.ClientCertificates.Identity; c {
	case "", CertCommonName, CertSubject, CertDNSName, CertEmail, CertURI:
		if c != "" && !v.verifiesClientCerts() {
			v.errf("auth.client_certificates.identity", "no listener verifies client certificates: set client_auth: request or require, with client_ca_file, under listeners.grpc.tls or listeners.http.tls")
		}
	default:
		v.errf("auth.client_certificates.identity", "%q is not a certificate name: use common_name, subject, dns_san, email_san or uri_san", c)
	}
	if a.Anonymous && !a.Enabled() {
		v.errf("auth.anonymous", "needs auth.jwt or auth.client_certificates: without them every call is anonymous already")
	}
	for i, r := range v.cfg.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		for j, rule := range r.Allow {
			v.allowRule(fmt.Sprintf("%s.allow[%d]", p, j), rule.Identities, rule.Roles)
		}
		if pr := r.Produce; pr != nil {
			if pr.KeyFromIdentity {
				v.needsAuth(p + ".produce.key_from_identity")
				if pr.Key != "" {
					v.errf(p+".produce.key_from_identity", "give either key or key_from_identity, not both")
				}
			}
			if pr.IdentityHeader != "" {
				v.needsAuth(p + ".produce.identity_header")
				v.identityHeader(p+".produce.identity_header", pr)
			}
		}
		if f := r.Fetch; f != nil {
			for j, fl := range f.Filters {
				fp := fmt.Sprintf("%s.fetch.filters[%d]", p, j)
				if fl.KeyFromIdentity {
					v.needsAuth(fp + ".key_from_identity")
					if fl.Key != "" || fl.KeyFromMetadata != "" {
						v.errf(fp+".key_from_identity", "give one of key, key_from_metadata and key_from_identity")
					}
				}
				for k, h := range fl.HeadersFromIdentity {
					v.needsAuth(fmt.Sprintf("%s.headers_from_identity[%d]", fp, k))
					if h == "" {
						v.errf(fmt.Sprintf("%s.headers_from_identity[%d]", fp, k), "is an empty header name")
					}
				}
			}
		}
	}
	for i, rule := range v.cfg.KafkaAPI.Allow {
		p := fmt.Sprintf("kafka_api.allow[%d]", i)
		v.allowRule(p, rule.Identities, rule.Roles)
		if len(rule.Produce)+len(rule.Consume)+len(rule.Groups)+len(rule.Admin) == 0 {
			v.errf(p, "allows nothing: list topics under produce, consume or admin, or groups")
		}
		if len(rule.Consume) > 0 && len(rule.Groups) == 0 {
			v.errf(p+".groups", "is required with consume: list the consumer groups the callers may consume in (\"*\" for any)")
		}
		for _, l := range []struct {
			key   string
			names []string
		}{{"produce", rule.Produce}, {"consume", rule.Consume}, {"groups", rule.Groups}, {"admin", rule.Admin}} {
			v.patterns(p+"."+l.key, l.names)
		}
	}
}

// allowRule checks one rule naming callers.
func (v *validator) allowRule(p string, identities, roles []string) {
	v.needsAuth(p)
	if len(identities) == 0 && len(roles) == 0 {
		v.errf(p, "names no caller: list identities, roles or both (\"*\" for every authenticated caller)")
	}
	v.patterns(p+".identities", identities)
	v.patterns(p+".roles", roles)
}

// patterns checks that each name is a valid path.Match pattern.
func (v *validator) patterns(p string, names []string) {
	for i, n := range names {
		if n == "" {
			v.errf(fmt.Sprintf("%s[%d]", p, i), "is empty")
			continue
		}
		if _, err := path.Match(n, ""); err != nil {
			v.errf(fmt.Sprintf("%s[%d]", p, i), "%q is not a pattern: %v", n, err)
		}
	}
}

// needsAuth reports a use of identities without a way to authenticate.
func (v *validator) needsAuth(p string) {
	if !v.cfg.Auth.Enabled() {
		v.errf(p, "needs callers' identities: configure auth.jwt or auth.client_certificates")
	}
}

// identityHeader checks that a produce route's identity header does not
// take the name of a header of the record layout.
func (v *validator) identityHeader(p string, r *ProduceRoute) {
	hn := r.HeaderNames
	for _, h := range []string{hn.Service, hn.Method, hn.ReplyTo, hn.CorrelationID, hn.Status, hn.Message} {
		if r.IdentityHeader == h {
			v.errf(p, "%q is a header of the record layout: choose another name", h)
		}
	}
	for _, o := range r.Overrides {
		if o.Name == r.IdentityHeader {
			v.errf(p, "%q is also an override: the identity header would be written twice", o.Name)
		}
	}
}

// verifiesClientCerts reports whether a listener verifies client
// certificates.
func (v *validator) verifiesClientCerts() bool {
	l := v.cfg.Listeners
	for _, t := range []ListenerTLS{l.GRPC.TLS, l.HTTP.TLS} {
		if t.Enabled() && (t.ClientAuth == ClientAuthRequest || t.ClientAuth == ClientAuthRequire) {
			return true
		}
	}
	return false
}

// CheckJWKSURL accepts an https URL with a host, and an http one on a
// loopback address (localhost, 127.0.0.0/8, ::1): keys fetched in the
// clear from elsewhere could be replaced on the way. Its errors show the
// URL without its password. Both auth.jwt.jwks_url's validation and
// internal/auth's JWT verifier use it.
func CheckJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	shown := strconv.Quote(u.Redacted())
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%s is not https: a JWKS URL must use https, as keys fetched over plain http could be forged on the way (http is accepted for loopback addresses only)", shown)
		}
	default:
		return fmt.Errorf("%s is not https: a JWKS URL must use https", shown)
	}
	if u.Host == "" {
		return fmt.Errorf("%s names no host", shown)
	}
	return nil
}
